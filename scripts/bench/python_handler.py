"""The Python comparison for `make bench`: a Lambda handler on the Runtime
API that creates the same boto3 clients at init as the Rust function it
stands beside (the client names are its arguments), then answers each event
as a malformed one."""
import json
import os
import sys
import urllib.request

import boto3

CLIENTS = [boto3.client(name, region_name=os.environ.get("AWS_REGION", "us-east-1")) for name in sys.argv[1:]]

api = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime/invocation"
while True:
    with urllib.request.urlopen(api + "/next") as r:
        request_id = r.headers["Lambda-Runtime-Aws-Request-Id"]
        json.loads(r.read())
    body = json.dumps({"errorType": "Invalid", "errorMessage": "cannot read the event"}).encode()
    urllib.request.urlopen(urllib.request.Request(api + "/" + request_id + "/error", data=body, method="POST")).read()
