"""A simulated AT Protocol network (PLC directory + PDS hosts) serving real repositories.

Real DAG-CBOR blocks, real CIDs, a real MST and real CAR files, with the XRPC errors of
the reference PDS and injectable faults. For the demo, fast tests and benchmarks.
"""
