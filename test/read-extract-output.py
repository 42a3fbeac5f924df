# Reads a neurotap extraction folder with the standard library and numpy alone, as a user's
# analysis script would: checks each shard against manifest.json (size, sha256), reads the
# tokens and every f32 activation, and prints {"sequences", "complete", "d"} as JSON (d: the
# activations' last dimension). Used by test/extract.test.ts and test/extract-verify.test.ts.
import hashlib
import json
import struct
import sys

import numpy as np


def tensor(raw, base, entry, dtype):
    begin, end = entry["data_offsets"]
    return np.frombuffer(raw[base + begin : base + end], dtype=dtype).reshape(entry["shape"])


folder = sys.argv[1]
manifest = json.load(open(folder + "/manifest.json"))
sequences, width = 0, None
for shard in manifest["shards"]:
    raw = open(folder + "/" + shard["file"], "rb").read()
    assert len(raw) == shard["bytes"], shard["file"] + ": size differs from the manifest"
    assert hashlib.sha256(raw).hexdigest() == shard["sha256"], shard["file"] + ": sha256 differs from the manifest"
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    tokens = tensor(raw, 8 + n, header["tokens"], "<i4")
    for name, entry in header.items():
        if name in ("__metadata__", "tokens") or entry["dtype"] != "F32":
            continue
        act = tensor(raw, 8 + n, entry, "<f4")
        assert act.shape[:2] == tokens.shape and np.isfinite(act).all(), name
        width = int(act.shape[2])
    sequences += tokens.shape[0]
print(json.dumps({"sequences": sequences, "complete": manifest["complete"], "d": width}))
