"""The `hydro` command: thin wrappers over the parts (stack, store, builder, gateway, router)."""
