#!/usr/bin/env python3
"""Reads one partition of a Kafka topic and prints every record as one JSON line.

Used by run.sh to look at what Switchyard produced, byte for byte. Standard library only: it
speaks just enough of the Kafka protocol for that (Fetch v4, record batches v2, uncompressed or
gzip), so it needs no Kafka client package. Why not an existing tool: `tansu cat consume` decodes
keys and values as JSON (a plain-string key shows as null, a value comes back re-serialized), and
Debian's kcat (librdkafka 2.0.2) cannot parse tansu's ApiVersions reply.

    consume.py --broker 127.0.0.1:9092 --topic orders [--partition 0] [--offset 0]

Prints, per record, from --offset up to the partition's high watermark:
    {"offset": 0, "key": "ord-1", "value": "{...}", "headers": {"switchyard-request-id": "..."}}
`key`, `value` and header values are the exact bytes decoded as UTF-8 (null for a null key or
value; bytes that are not UTF-8 are printed as {"base64": "..."}). Exit code 0 when the fetch
worked (even with no records), 1 with a message on stderr otherwise.
"""

import argparse
import base64
import gzip
import json
import socket
import struct
import sys

FETCH = 1
FETCH_VERSION = 4


class Reader:
    def __init__(self, data):
        self.data = data
        self.pos = 0

    def take(self, n):
        if n < 0 or self.pos + n > len(self.data):
            raise EOFError("truncated")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt):
        size = struct.calcsize(fmt)
        return struct.unpack(fmt, self.take(size))[0]

    def i8(self):
        return self.unpack(">b")

    def i16(self):
        return self.unpack(">h")

    def i32(self):
        return self.unpack(">i")

    def i64(self):
        return self.unpack(">q")

    def string(self):
        n = self.i16()
        return None if n < 0 else self.take(n).decode()

    def uvarint(self):
        shift = result = 0
        while True:
            byte = self.take(1)[0]
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7

    def varint(self):
        n = self.uvarint()
        return (n >> 1) ^ -(n & 1)  # zigzag

    def varbytes(self):
        n = self.varint()
        return None if n < 0 else self.take(n)


def kstring(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def fetch_request(correlation_id, topic, partition, offset, max_wait_ms):
    header = struct.pack(">hhi", FETCH, FETCH_VERSION, correlation_id) + kstring("switchyard-scenario")
    body = struct.pack(">iiiib", -1, max_wait_ms, 1, 16 * 1024 * 1024, 0)  # read_uncommitted
    body += struct.pack(">i", 1) + kstring(topic)
    body += struct.pack(">i", 1) + struct.pack(">iqi", partition, offset, 8 * 1024 * 1024)
    message = header + body
    return struct.pack(">i", len(message)) + message


def recv_exactly(sock, n):
    chunks = []
    while n:
        chunk = sock.recv(n)
        if not chunk:
            raise EOFError("broker closed the connection")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def text(raw):
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(raw).decode()}


def records_of(batches):
    """Yields (offset, key, value, headers) from a partition's record batches."""
    r = Reader(batches)
    while len(r.data) - r.pos >= 12:
        base_offset = r.i64()
        batch_length = r.i32()
        if len(r.data) - r.pos < batch_length:
            return  # a partial batch at the end of the fetch: the next fetch gets it whole
        batch = Reader(r.take(batch_length))
        batch.i32()  # partition leader epoch
        magic = batch.i8()
        if magic != 2:
            raise ValueError(f"record batch magic {magic} is not supported (only v2)")
        batch.take(4)  # crc
        attributes = batch.i16()
        batch.take(4 + 8 + 8 + 8 + 2 + 4)  # last offset delta, timestamps, producer id/epoch, sequence
        count = batch.i32()
        payload = batch.data[batch.pos :]
        codec = attributes & 0x07
        if codec == 1:
            payload = gzip.decompress(payload)
        elif codec != 0:
            raise ValueError(f"compression codec {codec} is not supported (only none and gzip)")
        if attributes & 0x20:
            continue  # a control batch (transaction marker), no data
        rec = Reader(payload)
        for _ in range(count):
            length = rec.varint()
            one = Reader(rec.take(length))
            one.i8()  # attributes
            one.varint()  # timestamp delta
            offset_delta = one.varint()
            key = one.varbytes()
            value = one.varbytes()
            headers = {}
            for _ in range(one.varint()):
                name = one.varbytes().decode()
                headers[name] = text(one.varbytes())
            yield base_offset + offset_delta, key, value, headers


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", required=True, help="host:port")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--partition", type=int, default=0)
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=10.0, help="socket timeout, seconds")
    args = parser.parse_args()

    host, _, port = args.broker.rpartition(":")
    offset = args.offset
    correlation_id = 0
    try:
        with socket.create_connection((host, int(port)), timeout=args.timeout) as sock:
            while True:
                correlation_id += 1
                sock.sendall(fetch_request(correlation_id, args.topic, args.partition, offset, 100))
                size = struct.unpack(">i", recv_exactly(sock, 4))[0]
                r = Reader(recv_exactly(sock, size))
                if r.i32() != correlation_id:
                    raise ValueError("unexpected correlation id")
                r.i32()  # throttle time
                batches = None
                for _ in range(r.i32()):
                    r.string()  # topic
                    for _ in range(r.i32()):
                        r.i32()  # partition
                        error = r.i16()
                        high_watermark = r.i64()
                        r.i64()  # last stable offset
                        aborted = r.i32()
                        for _ in range(max(aborted, 0)):
                            r.take(16)
                        n = r.i32()
                        batches = b"" if n < 0 else r.take(n)
                        if error:
                            raise ValueError(f"broker answered error code {error} for {args.topic}/{args.partition}")
                if batches is None:
                    raise ValueError("the fetch response did not include the partition")
                before = offset
                for rec_offset, key, value, headers in records_of(batches):
                    if rec_offset < offset:
                        continue  # a batch may start before the requested offset
                    line = {"offset": rec_offset, "key": text(key), "value": text(value), "headers": headers}
                    print(json.dumps(line, ensure_ascii=False), flush=True)
                    offset = rec_offset + 1
                if offset >= high_watermark or offset == before:
                    return 0
    except (OSError, EOFError, ValueError, struct.error) as e:
        print(f"consume.py: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
