"""The Azure twin: a loopback HTTPS emulator of every Azure API the app calls.

It never imports ``skr``: it is an independent implementation of Azure's contracts, so tests can
catch the app's bugs.
"""
