"""What the test modules share: processes, accounts, databases, apps and the request helpers of
each service. Test modules import from here, never from each other; conftest.py holds only the
fixtures and hooks."""
