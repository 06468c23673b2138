# An independent client of the control service, generated from monitoring/proto/control.proto by
# grpc_tools (Debian's python3-grpcio and python3-grpc-tools), to check the service against the
# .proto rather than against tandemctl. One call per run, its reply printed as one JSON line:
#   control_client.py GENERATED_DIR ADDR CALL [VALUE] [--token TOKEN]
# CALL: status, watch N (the first N messages), pause, resume, checkpoint, set-lr RATE, stop;
# flood N: holds N status streams open (each has had its first message), opens one more, and while
# they are held calls GetStatus, Pause and Resume (with --token): a JSON object of what each got.
# A refused call prints "CODE: message" (CODE as grpc.StatusCode names it) and exits 1.
import json
import sys

generated, addr, call = sys.argv[1], sys.argv[2], sys.argv[3]
args = sys.argv[4:]
token = None
if "--token" in args:
    i = args.index("--token")
    token = args[i + 1]
    del args[i:i + 2]
sys.path.insert(0, generated)

import grpc  # noqa: E402
from google.protobuf import json_format  # noqa: E402

import control_pb2 as pb  # noqa: E402
import control_pb2_grpc as pb_grpc  # noqa: E402

channel = grpc.insecure_channel(addr, options=[("grpc.enable_http_proxy", 0)])
grpc.channel_ready_future(channel).result(timeout=10)
stub = pb_grpc.ControlStub(channel)
metadata = [("authorization", "Bearer " + token)] if token is not None else []


def show(message):
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     including_default_value_fields=True)


try:
    if call == "status":
        print(json.dumps(show(stub.GetStatus(pb.GetStatusRequest(), timeout=10))))
    elif call == "watch":
        count = int(args[0])
        stream = stub.WatchStatus(pb.WatchStatusRequest(), timeout=120)
        out = []
        for message in stream:
            out.append(show(message))
            if len(out) == count:
                stream.cancel()
                break
        print(json.dumps(out))
    elif call == "flood":
        held = []
        for _ in range(int(args[0])):
            stream = stub.WatchStatus(pb.WatchStatusRequest(), timeout=60)
            next(stream)
            held.append(stream)
        def outcome(thunk):
            try:
                thunk()
                return "OK"
            except grpc.RpcError as error:
                return f"{error.code().name}: {error.details()}"
        result = {
            "one_more": outcome(lambda: next(stub.WatchStatus(pb.WatchStatusRequest(), timeout=10))),
            "status": outcome(lambda: stub.GetStatus(pb.GetStatusRequest(), timeout=10)),
            "pause": outcome(lambda: stub.Pause(pb.PauseRequest(), metadata=metadata, timeout=60)),
            "resume": outcome(lambda: stub.Resume(pb.ResumeRequest(), metadata=metadata, timeout=60)),
        }
        for stream in held:
            stream.cancel()
        print(json.dumps(result))
    elif call == "set-lr":
        request = pb.SetLearningRateRequest(learning_rate=float(args[0]))
        print(json.dumps(show(stub.SetLearningRate(request, metadata=metadata, timeout=120))))
    else:
        method, request = {
            "pause": (stub.Pause, pb.PauseRequest()),
            "resume": (stub.Resume, pb.ResumeRequest()),
            "checkpoint": (stub.Checkpoint, pb.CheckpointRequest()),
            "stop": (stub.Stop, pb.StopRequest()),
        }[call]
        print(json.dumps(show(method(request, metadata=metadata, timeout=120))))
except grpc.RpcError as error:
    print(f"{error.code().name}: {error.details()}")
    sys.exit(1)
