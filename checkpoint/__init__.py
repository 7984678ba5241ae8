"""Durable checkpoint stores: the contract and its sqlite, postgres and memory backends."""
