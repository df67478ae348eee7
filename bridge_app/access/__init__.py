"""Access: who may do what (the one access policy), API tokens, cache invalidation on user and group changes."""
