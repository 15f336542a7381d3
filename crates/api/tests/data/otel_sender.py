"""A real OpenTelemetry SDK sender for tests/otlp.rs: records a counter,
a histogram and an up-down counter, exports them once over OTLP/HTTP
(protobuf, gzip) to the URL given as the only argument and exits."""
import sys, time
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http import Compression

url = sys.argv[1]
exp = OTLPMetricExporter(endpoint=url, compression=Compression.Gzip)
reader = PeriodicExportingMetricReader(exp, export_interval_millis=3600_000)
res = Resource.create({"service.name": "pysvc", "service.instance.id": "py1", "deployment.environment": "test"})
mp = MeterProvider(resource=res, metric_readers=[reader])
m = mp.get_meter("py.lib", "2.0")
c = m.create_counter("py.requests", unit="{request}", description="Requests")
c.add(3, {"http.route": "/a"})
h = m.create_histogram("py.latency", unit="ms", description="Latency")
for v in [3, 30, 300]:
    h.record(v)
u = m.create_up_down_counter("py.queue", unit="By")
u.add(7)
ok = mp.force_flush()
print("flushed", ok)
mp.shutdown()
