"""Hostile inputs (issue #11): each case built the way a user or an attacker would build it."""
