#!/usr/bin/env python3
"""An independent S3 client for the storage tests: SigV4 and ListObjectsV2 written here with the Python standard
library only, so llmc's own client is checked against a second implementation.

  s3_verify.py list BUCKET PREFIX          -> JSON [{"key", "size", "etag"}] (every page)
  s3_verify.py get BUCKET KEY OUTFILE      -> writes the object, prints {"size", "sha256"}
  s3_verify.py put BUCKET KEY INFILE       -> uploads a file in one PUT
  s3_verify.py uploads BUCKET PREFIX       -> JSON [keys of multipart uploads in progress]
  s3_verify.py mb BUCKET                   -> creates the bucket

Settings from the environment: S3_ENDPOINT (http://host:port), AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_REGION (default us-east-1). Path-style addressing.
"""
import datetime
import hashlib
import hmac
import http.client
import json
import os
import sys
import urllib.parse
import xml.etree.ElementTree as ET

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def request(method, bucket, key="", query=None, body=b""):
    endpoint = urllib.parse.urlparse(os.environ["S3_ENDPOINT"])
    host = endpoint.netloc
    path = "/" + bucket + ("/" + urllib.parse.quote(key, safe="/~") if key else "")
    query = query or {}
    canonical_query = "&".join(
        urllib.parse.quote(k, safe="~") + "=" + urllib.parse.quote(v, safe="~") for k, v in sorted(query.items()))
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    payload_hash = hashlib.sha256(body).hexdigest()
    headers = {"host": host, "x-amz-date": amz_date, "x-amz-content-sha256": payload_hash}
    signed = ";".join(sorted(headers))
    canonical = "\n".join([method, path, canonical_query,
                           "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)), signed, payload_hash])
    region = os.environ.get("AWS_REGION", "us-east-1")
    scope = f"{amz_date[:8]}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key_bytes = ("AWS4" + os.environ["AWS_SECRET_ACCESS_KEY"]).encode()
    for part in (amz_date[:8], region, "s3", "aws4_request"):
        key_bytes = hmac.new(key_bytes, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key_bytes, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={os.environ['AWS_ACCESS_KEY_ID']}/{scope}, "
                                f"SignedHeaders={signed}, Signature={signature}")
    conn = http.client.HTTPConnection(host, timeout=60)
    conn.request(method, path + ("?" + canonical_query if canonical_query else ""), body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    if resp.status >= 300:
        sys.exit(f"s3_verify: {method} {path}?{canonical_query}: HTTP {resp.status}: {data[:300]!r}")
    return data


def list_objects(bucket, prefix):
    out, token = [], None
    while True:
        q = {"list-type": "2", "prefix": prefix, "max-keys": "7"}  # small pages: pagination is exercised too
        if token:
            q["continuation-token"] = token
        root = ET.fromstring(request("GET", bucket, query=q))
        for c in root.findall(NS + "Contents"):
            out.append({"key": c.find(NS + "Key").text, "size": int(c.find(NS + "Size").text),
                        "etag": (c.find(NS + "ETag").text or "").strip('"')})
        if root.findtext(NS + "IsTruncated") != "true":
            return out
        token = root.findtext(NS + "NextContinuationToken")


def main(argv):
    cmd = argv[1]
    if cmd == "list":
        print(json.dumps(list_objects(argv[2], argv[3])))
    elif cmd == "get":
        data = request("GET", argv[2], argv[3])
        with open(argv[4], "wb") as f:
            f.write(data)
        print(json.dumps({"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}))
    elif cmd == "put":
        with open(argv[4], "rb") as f:
            request("PUT", argv[2], argv[3], body=f.read())
        print("{}")
    elif cmd == "uploads":
        root = ET.fromstring(request("GET", argv[2], query={"uploads": "", "prefix": argv[3]}))
        print(json.dumps([u.findtext(NS + "Key") for u in root.findall(NS + "Upload")]))
    elif cmd == "mb":
        request("PUT", argv[2])
        print("{}")
    else:
        sys.exit(f"s3_verify: unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv)
