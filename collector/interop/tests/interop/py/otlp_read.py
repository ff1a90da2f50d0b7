"""Reads an OTLP ExportProfilesServiceRequest (a file) with OpenTelemetry's generated
Python classes and prints, per profile, its service, sample type and, per sample, the
stack's function names (leaf first) and value: `SERVICE TYPE/UNIT f1;f2;f3 VALUE`."""
import sys

from opentelemetry.proto.collector.profiles.v1development import profiles_service_pb2 as svc

request = svc.ExportProfilesServiceRequest.FromString(open(sys.argv[1], "rb").read())
d = request.dictionary
st = d.string_table
for rp in request.resource_profiles:
    attrs = {kv.key: kv.value.string_value for kv in rp.resource.attributes}
    for sp in rp.scope_profiles:
        for p in sp.profiles:
            t = st[p.sample_type.type_strindex] + "/" + st[p.sample_type.unit_strindex]
            for sample in p.samples:
                stack = d.stack_table[sample.stack_index]
                names = []
                for li in stack.location_indices:
                    for line in d.location_table[li].lines:
                        names.append(st[d.function_table[line.function_index].name_strindex])
                print(attrs.get("service.name"), t, ";".join(names), sum(sample.values))
