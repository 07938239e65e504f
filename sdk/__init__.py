"""The Python client SDK for hospitals: commitments, signed RECORD entries, anchoring, receipts.

Start with :class:`sdk.anchoring.HospitalClient`; commitments alone are in
:mod:`sdk.commitments`.
"""
