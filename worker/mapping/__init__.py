"""The pure mapping engine: report-style lab test names to the app's categories and LOINC codes.

No boto3, no SQL, no global state. Heavy imports (torch, sentence-transformers) happen inside
the engine module, so `worker.mapping.types` stays cheap to import.
"""
