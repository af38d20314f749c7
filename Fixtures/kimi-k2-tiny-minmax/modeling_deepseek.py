# Stand-in for modeling_deepseek.py of the real checkpoint (test fixture).
# Not executable model code.
