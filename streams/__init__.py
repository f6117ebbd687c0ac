"""The Faust app factory, the one settings object, topics, the CLI and the local stack launcher."""
