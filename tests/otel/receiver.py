"""An OTLP/HTTP protobuf receiver for execd's OpenTelemetry tests (EXTENSIONS X60).

Usage: receiver.py OUT.jsonl

Listens on 127.0.0.1 (a free port, printed as the first stdout line), decodes each
POST /v1/traces and POST /v1/metrics body with the official opentelemetry-proto definitions, and
appends one JSON line per span and per metric data point to OUT.jsonl, flushed at once:

  {"signal": "span", "name", "trace_id", "span_id", "parent_span_id", "kind", "attributes",
   "resource", "scope"}
  {"signal": "metric", "name", "unit", "type", "attributes", "resource", "scope"}

A body that does not decode is answered 400 and logged as {"signal": "error", ...}.
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

OUT = open(sys.argv[1], "a", encoding="utf-8")
LOCK = threading.Lock()


def value(v):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return attrs(v.kvlist_value.values)
    return getattr(v, kind) if kind else None


def attrs(kvs):
    return {kv.key: value(kv.value) for kv in kvs}


def emit(record):
    with LOCK:
        OUT.write(json.dumps(record, sort_keys=True) + "\n")
        OUT.flush()


def traces(body):
    req = ExportTraceServiceRequest()
    req.ParseFromString(body)
    for rs in req.resource_spans:
        resource = attrs(rs.resource.attributes)
        for ss in rs.scope_spans:
            for s in ss.spans:
                emit({
                    "signal": "span",
                    "name": s.name,
                    "trace_id": s.trace_id.hex(),
                    "span_id": s.span_id.hex(),
                    "parent_span_id": s.parent_span_id.hex(),
                    "kind": s.kind,
                    "attributes": attrs(s.attributes),
                    "resource": resource,
                    "scope": ss.scope.name,
                })
    return ExportTraceServiceResponse().SerializeToString()


def metrics(body):
    req = ExportMetricsServiceRequest()
    req.ParseFromString(body)
    for rm in req.resource_metrics:
        resource = attrs(rm.resource.attributes)
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                for p in getattr(m, kind).data_points:
                    point = {
                        "signal": "metric",
                        "name": m.name,
                        "unit": m.unit,
                        "type": kind,
                        "attributes": attrs(p.attributes),
                        "resource": resource,
                        "scope": sm.scope.name,
                    }
                    if kind == "histogram":
                        point["count"] = p.count
                    else:
                        point["value"] = p.as_double if p.WhichOneof("value") == "as_double" else p.as_int
                    emit(point)
    return ExportMetricsServiceResponse().SerializeToString()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        decode = {"/v1/traces": traces, "/v1/metrics": metrics}.get(self.path)
        status, out = 404, b""
        if decode is not None:
            if self.headers.get("Content-Type") != "application/x-protobuf":
                emit({"signal": "error", "path": self.path, "error": "content type " + str(self.headers.get("Content-Type"))})
                status = 415
            else:
                try:
                    out, status = decode(body), 200
                except Exception as e:  # noqa: BLE001 - reported to the test
                    emit({"signal": "error", "path": self.path, "error": repr(e)})
                    status = 400
        self.send_response(status)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
