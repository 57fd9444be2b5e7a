"""The team's agents. deploybot is the example."""
