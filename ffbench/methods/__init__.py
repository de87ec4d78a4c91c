"""The built-in methods, each a plugin registered through the ``ffbench.methods`` entry point, as a
third-party method is."""
