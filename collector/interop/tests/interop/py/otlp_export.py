"""Builds an OTLP profiles export with OpenTelemetry's own generated Python classes
(PyPI opentelemetry-proto) and POSTs it to an OTLP/HTTP profiles endpoint.

    otlp_export.py URL SERVICE INSTANCE [TOKEN]

The profile: CPU samples (sample type samples/count, period type cpu/nanoseconds) of
two stacks, main -> serve -> interop_hot_loop (90) and main -> serve -> interop_idle
(10), with a string attribute on each sample. Prints the response's partial success.
"""
import sys
import time
import urllib.request

from opentelemetry.proto.collector.profiles.v1development import profiles_service_pb2 as svc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.profiles.v1development import profiles_pb2 as pb
from opentelemetry.proto.resource.v1 import resource_pb2

url, service, instance = sys.argv[1:4]
token = sys.argv[4] if len(sys.argv) > 4 else None

d = pb.ProfilesDictionary()
strings = {}


def s(text):
    if text not in strings:
        strings[text] = len(d.string_table)
        d.string_table.append(text)
    return strings[text]


s("")
d.mapping_table.add()
d.location_table.add()
d.function_table.add()
d.link_table.add()
d.attribute_table.add()
d.stack_table.add()
mapping = len(d.mapping_table)
d.mapping_table.add(filename_strindex=s("/usr/bin/" + service))


def function(name, line):
    index = len(d.function_table)
    d.function_table.add(name_strindex=s(name), filename_strindex=s("src/main.rs"), start_line=line)
    loc = len(d.location_table)
    d.location_table.add(mapping_index=mapping, address=0x1000 + 16 * index,
                         lines=[pb.Line(function_index=index, line=line + 1)])
    return loc


main, serve = function("interop::main", 10), function("interop::serve", 20)
hot, idle = function("interop::interop_hot_loop", 30), function("interop::interop_idle", 40)
d.stack_table.add(location_indices=[hot, serve, main])
d.stack_table.add(location_indices=[idle, serve, main])
d.attribute_table.add(key_strindex=s("thread.name"), value=common_pb2.AnyValue(string_value="worker-1"))

now = time.time_ns()
profile = pb.Profile(
    sample_type=pb.ValueType(type_strindex=s("samples"), unit_strindex=s("count")),
    period_type=pb.ValueType(type_strindex=s("cpu"), unit_strindex=s("nanoseconds")),
    period=10_000_000,
    time_unix_nano=now - 10_000_000_000,
    duration_nano=10_000_000_000,
    profile_id=bytes(range(1, 17)),
    samples=[
        pb.Sample(stack_index=1, values=[90], attribute_indices=[1]),
        pb.Sample(stack_index=2, values=[10], attribute_indices=[1]),
    ],
)
resource = resource_pb2.Resource(attributes=[
    common_pb2.KeyValue(key="service.name", value=common_pb2.AnyValue(string_value=service)),
    common_pb2.KeyValue(key="service.instance.id", value=common_pb2.AnyValue(string_value=instance)),
    common_pb2.KeyValue(key="k8s.namespace.name", value=common_pb2.AnyValue(string_value="shop")),
])
request = svc.ExportProfilesServiceRequest(
    resource_profiles=[pb.ResourceProfiles(
        resource=resource,
        scope_profiles=[pb.ScopeProfiles(scope=common_pb2.InstrumentationScope(name="python-test"),
                                         profiles=[profile])],
    )],
    dictionary=d,
)
headers = {"content-type": "application/x-protobuf"}
if token:
    headers["authorization"] = "Bearer " + token
answer = urllib.request.urlopen(urllib.request.Request(url, data=request.SerializeToString(), headers=headers))
response = svc.ExportProfilesServiceResponse.FromString(answer.read())
print("rejected", response.partial_success.rejected_profiles, response.partial_success.error_message)
