# Stand-in for configuration_deepseek.py of the real checkpoint (test fixture).
# Not executable model code.
