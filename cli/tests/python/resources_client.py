#!/usr/bin/env python3
"""A Python grpcio client of Berth's Resources service, with stubs generated from the
project's .proto files at test time (no hand-written wire code): creates, lists and watches a
Pod. Usage: resources_client.py PROTO_DIR SERVER_ADDR. Exits non-zero on any mismatch."""
import os
import sys
import tempfile
import threading

from grpc_tools import protoc

proto_dir, server = sys.argv[1], sys.argv[2]
out = tempfile.mkdtemp()
files = [f"berth/{f}" for f in sorted(os.listdir(os.path.join(proto_dir, "berth"))) if f != "raft.proto"]
include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
rc = protoc.main(["protoc", f"-I{proto_dir}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}"] + files)
assert rc == 0, f"protoc failed ({rc})"
sys.path.insert(0, out)

import grpc  # noqa: E402
from berth import core_pb2, meta_pb2, resources_pb2, resources_pb2_grpc  # noqa: E402

stub = resources_pb2_grpc.ResourcesStub(grpc.insecure_channel(server))

# Watch pods in "default" from now, in the background, before creating the pod.
listed = stub.List(resources_pb2.ListRequest(resource="pods", namespace="default"))
events = []
seen_added = threading.Event()


def watch():
    req = resources_pb2.WatchRequest(
        resource="pods",
        namespace="default",
        options=resources_pb2.ListOptions(resource_version=listed.metadata.resource_version),
    )
    for ev in stub.Watch(req, timeout=30):
        events.append(ev)
        if ev.type == resources_pb2.WatchEvent.ADDED and ev.object.pod.metadata.name == "py-pod":
            seen_added.set()
            return


t = threading.Thread(target=watch, daemon=True)
t.start()

pod = core_pb2.Pod(
    api_version="v1",
    kind="Pod",
    metadata=meta_pb2.ObjectMeta(name="py-pod", namespace="default", labels={"from": "python"}),
    spec=core_pb2.PodSpec(containers=[core_pb2.Container(name="main", image="busybox:1.36")]),
)
created = stub.Create(resources_pb2.CreateRequest(object=resources_pb2.Object(pod=pod)))
assert created.WhichOneof("kind") == "pod", created
meta = created.pod.metadata
assert meta.uid and meta.resource_version and meta.creation_timestamp, meta
assert created.pod.spec.restart_policy == "Always", "defaulted by the server"

page = stub.List(
    resources_pb2.ListRequest(
        resource="pods", namespace="default", options=resources_pb2.ListOptions(label_selector="from=python")
    )
)
names = [o.pod.metadata.name for o in page.items]
assert names == ["py-pod"], names

assert seen_added.wait(30), f"watch did not see the pod: {events}"
try:
    stub.Create(resources_pb2.CreateRequest(object=resources_pb2.Object(pod=pod)))
    raise AssertionError("a duplicate create must fail")
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.ALREADY_EXISTS, e
print("python grpcio client: create, list, watch ok")
