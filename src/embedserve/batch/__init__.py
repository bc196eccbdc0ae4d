"""Bulk jobs: OpenAI's Files and Batches API and ``embedserve batch run``.

``files`` stores uploads crash-safely, ``jobs`` holds the state machine and claims in the store, ``runner`` runs
claimed jobs on the server's engine at low priority. Every line is judged and priced by ``service.py``.
"""
