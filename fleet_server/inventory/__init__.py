"""The fleet's inventory: what the cars publish, written to the database, read into memory."""
