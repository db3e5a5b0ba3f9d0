"""Core library of the SKR Orchestrator: contracts, policy engine, naming, errors, settings, services.

Nothing here imports azure.functions: the library is usable from activities, tools and tests alike.
"""
