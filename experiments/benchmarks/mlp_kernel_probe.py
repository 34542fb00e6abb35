"""Probe: the exported policy's MLP as one numba kernel against ONNX Runtime, hot and with the caches disturbed.

Not used by the router (``experiments/benchmarks/README.md``, "How often the target can hold": tried and dropped).
Reads the ONNX graph ``rlroute export`` writes for a PPO policy (float64 clamp to the training range, standardise,
clip; then Gemm, tanh, Gemm, tanh, Gemm in float32), evaluates it with a numba kernel over the graph's own
initializers, checks the logits against ONNX Runtime on random observations, then times one call of each (thread
CPU, 20,000 calls hot; 2,000 calls with 16 MB of data touched between calls, as other processes would).

    .venv/bin/rlroute export fresh=true out=/tmp/dp-policy n_verify=200 overwrite=true
    .venv/bin/python experiments/benchmarks/mlp_kernel_probe.py --policy /tmp/dp-policy
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numba
import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper


@numba.njit(cache=False, nogil=True)
def forward(obs, low, high, mean, std, dmin, dmax, w1t, w2t, w3t, x, h1, h2, out):  # type: ignore[no-untyped-def]
    n = obs.shape[0]
    for i in range(n):
        v = np.float64(obs[i])
        v = min(max(v, low[i]), high[i])
        v = min(max((v - mean[i]) / std[i], dmin), dmax)
        x[i] = np.float32(v)
    h1[:] = 0
    for i in range(n):
        for j in range(h1.shape[0]):
            h1[j] += x[i] * w1t[i, j]
    for j in range(h1.shape[0]):
        h1[j] = np.tanh(h1[j])
    h2[:] = 0
    for i in range(h1.shape[0]):
        for j in range(h2.shape[0]):
            h2[j] += h1[i] * w2t[i, j]
    for j in range(h2.shape[0]):
        h2[j] = np.tanh(h2[j])
    out[:] = 0
    for i in range(h2.shape[0]):
        for j in range(out.shape[0]):
            out[j] += h2[i] * w3t[i, j]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", type=Path, required=True, help="exported policy folder (policy.onnx)")
    args = ap.parse_args()
    path = str(args.policy / "policy.onnx")
    graph = onnx.load(path)
    if [n.op_type for n in graph.graph.node] != ["Cast", "Max", "Min", "Sub", "Div", "Clip", "Cast", "Gemm", "Tanh",
                                                 "Gemm", "Tanh", "Gemm"]:
        raise SystemExit(f"{path}: not the graph this probe evaluates (a PPO export without biases)")
    init = {i.name: numpy_helper.to_array(i) for i in graph.graph.initializer}
    w1t, w2t, w3t = (np.ascontiguousarray(init[k].T) for k in ("policy_net.0.weight", "policy_net.2.weight",
                                                                 "action_net.weight"))
    low, high, mean, std = (init[k] for k in ("low", "high", "mean", "std"))
    dmin, dmax = float(init["div_min"]), float(init["div_max"])
    x, h1, h2 = np.zeros(len(mean), np.float32), np.zeros(w1t.shape[1], np.float32), np.zeros(w2t.shape[1], np.float32)
    out = np.zeros(w3t.shape[1], np.float32)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
    obs_all = (np.random.default_rng(0).standard_normal((20000, len(mean))) * 2).astype(np.float32)
    ref = sess.run(None, {"obs": obs_all})[0]
    diff, disagree = 0.0, 0
    for k in range(len(obs_all)):
        forward(obs_all[k], low, high, mean, std, dmin, dmax, w1t, w2t, w3t, x, h1, h2, out)
        diff = max(diff, float(np.abs(out - ref[k]).max()))
        disagree += int(out.argmax() != ref[k].argmax())
    print(f"max |logit difference| {diff:.3g} (logits up to {float(np.abs(ref).max()):.3g}); argmax disagreements "
          f"{disagree} of {len(obs_all)}")
    inp, res = np.zeros((1, len(mean)), np.float32), np.zeros((1, len(out)), np.float32)
    binding = sess.io_binding()
    binding.bind_cpu_input("obs", inp)
    binding.bind_output("logits", "cpu", 0, np.float32, list(res.shape), res.ctypes.data)

    def with_ort(ob: np.ndarray) -> None:  # as OnnxPolicy.logits: copy in, run, copy out
        np.copyto(inp[0], ob)
        sess.run_with_iobinding(binding)
        res[0].copy()

    def with_numba(ob: np.ndarray) -> None:
        forward(ob, low, high, mean, std, dmin, dmax, w1t, w2t, w3t, x, h1, h2, out)
        out.copy()

    junk = np.zeros(16 * 1024 * 1024 // 8)
    for label, calls, disturb in (("hot", 20000, False), ("16 MB touched between calls", 2000, True)):
        for name, fn in (("onnxruntime", with_ort), ("numba", with_numba)):
            fn_: Callable[[np.ndarray], None] = fn
            ts = np.empty(calls)
            for k in range(calls):
                if disturb:
                    junk += 1.0
                t0 = time.thread_time_ns()
                fn_(obs_all[k])
                ts[k] = time.thread_time_ns() - t0
            ts /= 1000.0
            print(f"{label:<28} {name:<12} thread CPU p50 {np.percentile(ts, 50):6.2f} us  p99 {np.percentile(ts, 99):6.2f} us")


if __name__ == "__main__":
    main()
