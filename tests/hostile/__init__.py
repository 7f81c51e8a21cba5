"""Attack cases: hostile inputs, outages and slow clients that once broke the gateway.

Each module holds the regression tests of one kind of attack, so a later change cannot bring it back.
"""
