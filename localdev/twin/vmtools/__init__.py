"""In-VM tools of the twin: stand-ins for ``AttestationClient`` and ``AzureAttestSKR``.

Each tool is a standalone script (standard library only, Python 3.8+) run by the in-VM script
through the sandbox's ``bin/`` wrappers, so it runs under the same interpreter as that script.
"""
