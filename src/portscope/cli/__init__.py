"""Commands: parse input, call one core function, render. The only layer that prints or exits."""
