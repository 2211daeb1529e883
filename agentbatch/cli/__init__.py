"""The command line: `agentbatch` parses options here and calls the facade."""
