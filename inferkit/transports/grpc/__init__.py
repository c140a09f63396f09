"""The gRPC transport: the V2 ``inference.GRPCInferenceService`` over grpclib.

``convert`` turns the generated messages (``_generated/``, built from ``proto/`` by
``scripts/gen_proto.py``; never edited by hand) into the core's Structs and back.
"""
