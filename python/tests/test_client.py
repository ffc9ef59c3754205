"""The client without a lem server: the grammar, where markers go when nothing listens, the marker lines of
stdout mode, the HF generate() helper, vLLM's counters, and the mapping of CUDA_VISIBLE_DEVICES. Workloads run as
processes of their own (the session is one per process)."""

import http.server
import json
import os
import random
import subprocess
import sys
import threading
import time
import unittest

import support

import lem
import lem.vllm
from lem import prom

TESTDATA = os.path.join(support.HERE, "testdata")


def read(name):
    with open(os.path.join(TESTDATA, name)) as f:
        return f.read()


def stdout_lines(script, *args, **env):
    """The script's stdout in stdout mode, each marker line's own time checked and taken out."""
    t0 = time.time_ns()
    p = support.run_py(script, args, env=support.clean_env(LEM_MARKERS="stdout", **env))
    t1 = time.time_ns()
    if p.returncode != 0:
        raise AssertionError("%s: exit %d: %s" % (script, p.returncode, p.stderr))
    return support.unstamp(p.stdout.splitlines(), t0, t1)[0], p.stderr


class GrammarTest(unittest.TestCase):
    def test_bad_input_is_a_value_error_naming_it(self):
        for call, needle in ((lambda: lem.phase("pre fill"), "'pre fill'"),
                             (lambda: lem.window("x" * 65), "window name"),
                             (lambda: lem.window("req", id="-1"), "window id '-1'"),
                             (lambda: lem.window("req", id=1.5), "window id 1.5"),
                             (lambda: lem.window("ok").add(**{"1tokens": 3}), "'1tokens'"),
                             (lambda: lem.window("ok").add(tokens=float("nan")), "tokens=nan"),
                             (lambda: lem.window("ok").add(note="x" * 257), "1-256 printable"),
                             (lambda: lem.window("ok").add(obj=object()), "want a number"),
                             (lambda: lem.configure(lease_s=-1), "lease_s -1"),
                             (lambda: lem.configure(experiment="a\tb"), "experiment 'a\\tb'"),
                             (lambda: lem.configure(run_id="../x"), "run id '../x'"),
                             (lambda: lem.configure(gpus=[2000]), "gpus=[2000]"),
                             (lambda: lem.configure(markers="udp"), "markers='udp'")):
            with self.assertRaises(ValueError) as cm:
                call()
            msg = str(cm.exception)
            self.assertIn(needle, msg)
            self.assertTrue(msg.startswith("lem: ") and "\n" not in msg, msg)

    def test_window_counts_add_up(self):
        w = lem.window("req", id=7)
        w.add(output_tokens=3).add({"output_tokens": 4, "finish": "length"}).add(finish="stop")
        self.assertEqual(w.values, {"output_tokens": 7, "finish": "stop"})
        self.assertEqual(w.id, "7")
        with self.assertRaises(RuntimeError):
            w.end()


class NoServerTest(unittest.TestCase):
    def test_nothing_listens(self):
        """No LEM_MARKER_URL and no lem-exporter: everything runs, energies are None, and the process tree (this
        workload and a child of it) logs one warning."""
        port = support.closed_port()
        p = support.run_py("noop.py", ["child"], env=support.clean_env(LEM_EXPORTER="http://127.0.0.1:%d" % port))
        self.assertEqual(p.returncode, 0, p.stderr)
        lines = support.lem_lines(p.stderr)
        self.assertEqual(len(lines), 1, p.stderr)
        self.assertIn("no LEM_MARKER_URL and no lem-exporter at http://127.0.0.1:%d (connection refused)" % port, lines[0])
        got = json.loads(p.stdout.splitlines()[-1])
        self.assertEqual((got["energy"], got["per_gpu"], got["answer"], got["run_id"]), (None, None, None, None))
        self.assertGreater(got["duration"], 0.04)
        self.assertEqual(got["status"]["mode"], "off")

    def test_marker_server_gone(self):
        """LEM_MARKER_URL of a lem-run that is gone: markers are lost with one warning, the workload goes on."""
        port = support.closed_port()
        env = support.clean_env(LEM_MARKER_URL="http://127.0.0.1:%d/api/v1/runs/r1" % port, LEM_MARKER_TOKEN="t")
        p = support.run_py("noop.py", env=env)
        self.assertEqual(p.returncode, 0, p.stderr)
        lines = support.lem_lines(p.stderr)
        self.assertEqual(len(lines), 1, p.stderr)
        self.assertIn("cannot reach the marker server at http://127.0.0.1:%d" % port, lines[0])
        got = json.loads(p.stdout.splitlines()[-1])
        self.assertEqual((got["energy"], got["run_id"], got["status"]["mode"]), (None, "r1", "run"))
        self.assertGreater(got["status"]["failed"], 0)

    def test_bad_marker_url(self):
        p = support.run_py("noop.py", env=support.clean_env(LEM_MARKER_URL="http://127.0.0.1:1/not-a-run"))
        self.assertEqual(p.returncode, 0, p.stderr)
        lines = support.lem_lines(p.stderr)
        self.assertEqual(len(lines), 1, p.stderr)
        self.assertIn("is not a run's URL", lines[0])


class StdoutTest(unittest.TestCase):
    def test_hf_streamer(self):
        """Prefill from the prompt, decode from the first new token (on the host); input tokens without padding,
        output tokens until each sequence's EOS; the counts per call as window counts and results."""
        lines, _ = stdout_lines("generate.py", "streamer")
        counts = "input_tokens=5 output_tokens=6 requests=2"  # 3 + 2 prompt tokens; 4 + 2 new (EOS included)
        counts1 = "input_tokens=5 output_tokens=2 requests=2"  # one step
        self.assertEqual(lines, ["LEM_WINDOW_BEGIN generate", "LEM_PHASE prefill", "step", "LEM_PHASE decode", "step",
                                 "step", "step", "LEM_PHASE_END", "LEM_WINDOW_END generate " + counts,
                                 "LEM_RESULT " + counts, "LEM_WINDOW_BEGIN generate", "LEM_PHASE prefill", "step",
                                 "LEM_PHASE decode", "LEM_PHASE_END", "LEM_WINDOW_END generate " + counts1,
                                 "LEM_RESULT " + counts1,
                                 "totals {'input_tokens': 10, 'output_tokens': 8, 'requests': 4}"])

    def test_hf_instrument(self):
        """instrument(): every generate() marked (but warm-ups in paused(), and beam search, which transformers
        refuses a streamer), a streamer the call passes still gets every token, EOS and pad taken from the model's
        generation config."""
        lines, _ = stdout_lines("generate.py", "instrument")
        self.assertEqual(lines[:4], ["step"] * 4)
        self.assertEqual(lines[4:], ["LEM_PHASE pre", "inner put 2", "step", "LEM_PHASE dec", "inner put 2", "step",
                                     "inner put 2", "step", "inner put 2", "step", "inner put 2", "LEM_PHASE_END",
                                     "LEM_RESULT input_tokens=5 output_tokens=6 requests=2", "inner end",
                                     "totals {'input_tokens': 5, 'output_tokens': 6, 'requests': 2}"])

    def test_sync(self):
        """sync=True: every device torch has is synchronised before each boundary is marked (torch here is a
        stand-in that prints its calls)."""
        standin = os.path.join(support.WORKLOADS, "standin")
        env = {"PYTHONPATH": support.PYTHON_DIR + os.pathsep + standin}
        lines, _ = stdout_lines("generate.py", "sync", **env)
        sync = ["SYNC 0", "SYNC 1"]
        self.assertEqual(lines, sync + ["LEM_PHASE prefill", "step"] + sync + ["LEM_PHASE decode", "step"] + sync +
                         ["LEM_PHASE_END", "totals {'input_tokens': 5, 'output_tokens': 4, 'requests': 2}"])

    def test_phase_lines_in_time_order_across_threads(self):
        # Thread a takes its boundary's time, then loses the processor until thread b has begun its phase: the lines
        # come out in the order the phases began (b, then a, which ended b), and lem-run, which orders edges by
        # their time, must see them in that order too.
        code = """if True:
            import threading, time, lem
            from lem import _session
            boundary, b_begun = _session.Session.boundary, threading.Event()
            def late(self, sync):
                at = boundary(self, sync)
                if threading.current_thread().name == "a":
                    b_begun.wait(10)
                return at
            _session.Session.boundary = late
            lem.begin_phase("warmup")
            a = threading.Thread(target=lem.begin_phase, args=("a",), name="a")
            a.start()
            time.sleep(0.05)
            lem.begin_phase("b")
            b_begun.set()
            a.join()
            lem.end_phase()
        """
        t0 = time.time_ns()
        p = subprocess.run([sys.executable, "-c", code], env=support.clean_env(LEM_MARKERS="stdout"),
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        lines, _ = support.unstamp(p.stdout.splitlines(), t0, time.time_ns())
        self.assertEqual(lines, ["LEM_PHASE warmup", "LEM_PHASE b", "LEM_PHASE a", "LEM_PHASE_END"])

    def test_sync_without_torch(self):
        code = "import lem; lem.configure(sync=True); lem.begin_phase('a'); lem.begin_phase('b')"
        t0 = time.time_ns()
        p = subprocess.run([sys.executable, "-c", code], env=support.clean_env(LEM_MARKERS="stdout"),
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(support.unstamp(p.stdout.splitlines(), t0, time.time_ns())[0], ["LEM_PHASE a", "LEM_PHASE b"])
        lines = support.lem_lines(p.stderr)
        self.assertEqual(len(lines), 1, p.stderr)
        self.assertIn("torch cannot be imported", lines[0])

    def test_line_values_without_spaces(self):
        code = "import lem; lem.result(note='two words')"
        p = subprocess.run([sys.executable, "-c", code], env=support.clean_env(LEM_MARKERS="stdout"),
                           capture_output=True, text=True, timeout=60)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("ValueError: lem: result note='two words': a marker line's value has no spaces", p.stderr)


class Output:
    def __init__(self, n):
        self.token_ids = list(range(n))


class RequestOutput:
    def __init__(self, prompt, outs):
        self.prompt_token_ids = list(range(prompt))
        self.outputs = [Output(n) for n in outs]


class VLLMTest(unittest.TestCase):
    def test_server_totals(self):
        before = lem.vllm.server_totals(read("vllm-metrics-before.txt"))
        # 1234567 + 654321 prompt tokens, 250000 + 250001 generated; requests: stop and length (300 + 700 + 12 +
        # 988), failed: abort and error (5 + 0 + 1).
        self.assertEqual(before, {"input_tokens": 1888888.0, "output_tokens": 500001.0, "requests": 2000.0,
                                  "failed_requests": 6.0})
        model = "meta-llama/Llama-3.1-8B-Instruct"
        self.assertEqual(lem.vllm.server_totals(read("vllm-metrics-before.txt"), model), before)
        self.assertEqual(lem.vllm.server_totals(read("vllm-metrics-before.txt"), "other"),
                         {"input_tokens": None, "output_tokens": None, "requests": None, "failed_requests": None})

    def test_counts_between(self):
        before = lem.vllm.server_totals(read("vllm-metrics-before.txt"))
        after = lem.vllm.server_totals(read("vllm-metrics-after.txt"))
        # Prompt 6144 + 6144, generated 6144 + 5856, requests 10 + 14 + 4 + 20, one more aborted.
        self.assertEqual(lem.vllm.counts_between(before, after),
                         {"input_tokens": 12288, "output_tokens": 12000, "requests": 48, "failed_requests": 1})
        # A server restarted in between: its counters went down, so no count is given rather than a wrong one.
        self.assertEqual(lem.vllm.counts_between(after, before),
                         {"input_tokens": None, "output_tokens": None, "requests": None, "failed_requests": None})

    def test_server_counts_over_http(self):
        """ServerCounts reads a server's /metrics before and after, and posts the difference as results."""
        out, err = self.server_counts([read("vllm-metrics-before.txt"), read("vllm-metrics-after.txt")])
        self.assertEqual(out, [
            "LEM_RESULT input_tokens=12288 output_tokens=12000 requests=48 failed_requests=1",
            "{'input_tokens': 12288, 'output_tokens': 12000, 'requests': 48, 'failed_requests': 1}"])
        self.assertEqual(support.lem_lines(err), [])

    def test_server_counts_without_vllm_counters(self):
        """A /metrics without vLLM's counters (another server, another model name): no counts, one warning."""
        out, err = self.server_counts(["process_open_fds 42\n", "process_open_fds 43\n"])
        self.assertEqual(out, ["None"])
        lines = support.lem_lines(err)
        self.assertEqual(len(lines), 1, err)
        self.assertIn("has no vLLM token or request counters", lines[0])

    def server_counts(self, bodies):

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                body = bodies.pop(0).encode() if self.path == "/metrics" and bodies else b""
                self.send_response(200 if body else 404)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        t = threading.Thread(target=srv.serve_forever, daemon=True)
        t.start()
        try:
            code = ("import lem.vllm\nwith lem.vllm.ServerCounts('http://127.0.0.1:%d') as c:\n    pass\n"
                    "print(c.values)" % srv.server_address[1])
            t0 = time.time_ns()
            p = subprocess.run([sys.executable, "-c", code], env=support.clean_env(LEM_MARKERS="stdout"),
                               capture_output=True, text=True, timeout=60)
        finally:
            srv.shutdown()
            srv.server_close()
        self.assertEqual(p.returncode, 0, p.stderr)
        return support.unstamp(p.stdout.splitlines(), t0, time.time_ns())[0], p.stderr

    def test_count_outputs(self):
        outs = [RequestOutput(10, [5]), RequestOutput(7, [3, 4])]  # the second with n=2 completions
        self.assertEqual(lem.vllm.count_outputs(outs), {"input_tokens": 17, "output_tokens": 12, "requests": 2})
        self.assertEqual(lem.vllm.count_outputs([]), {"input_tokens": 0, "output_tokens": 0, "requests": 0})


class PromTest(unittest.TestCase):
    def test_parse(self):
        samples, skipped = prom.parse(read("vllm-metrics-before.txt"))
        self.assertEqual(skipped, 0)
        # gc 2, running 2, waiting 2, KV cache 2, prompt 2 + 2 created, generation 2 + 2 created, success 7 + 1
        # created, time to first token 5, cache config 1.
        self.assertEqual(len(samples), 30)
        info = [s for s in samples if s.name == "vllm:cache_config_info"][0]
        self.assertEqual(info.labels["prefix_caching_hash_algo"], 'builtin "sha256"\\fast')
        self.assertEqual(info.labels["num_gpu_blocks"], "27713")
        inf = [s for s in samples if s.labels.get("le") == "+Inf"][0]
        self.assertEqual(inf.value, 1005.0)

    def test_odd_lines(self):
        text = ('a_total 3 1700000000000\n'          # a timestamp after the value
                'b{x="1",} 2\n'                       # a trailing comma
                'c{x="unterminated} 1\n'              # skipped
                '9bad 1\n'                            # skipped: a name starts with a letter, _ or :
                'd{x="1"} not-a-number\n'             # skipped
                'e +Inf\n'
                'f{ y = "s" } -2.5e-3\n')
        samples, skipped = prom.parse(text.encode())
        self.assertEqual(skipped, 3)
        self.assertEqual([(s.name, s.labels, s.value) for s in samples],
                         [("a_total", {}, 3.0), ("b", {"x": "1"}, 2.0), ("e", {}, float("inf")),
                          ("f", {"y": "s"}, -0.0025)])
        self.assertEqual(prom.total(samples, "e"), None, "non-finite samples are not summed")

    def test_never_raises(self):
        """/metrics comes from the network: mangled text (bytes flipped, cut, spliced) is read or skipped,
        never an exception."""
        base = read("vllm-metrics-before.txt").encode()
        rng = random.Random(1)
        for _ in range(3000):
            b = bytearray(base)
            for _ in range(rng.randint(1, 20)):
                op = rng.random()
                i = rng.randrange(len(b))
                if op < 0.5:
                    b[i] = rng.randrange(256)
                elif op < 0.75:
                    del b[i:i + rng.randint(1, 40)]
                else:
                    b[i:i] = rng.choice([b'"', b"\\", b"{", b"}", b"=", b",", b"\n", b" ", b"\x00", b"e+"])
            samples, skipped = prom.parse(bytes(b))
            self.assertIsInstance(skipped, int)
            lem.vllm.server_totals(bytes(b))


class GPUMappingTest(unittest.TestCase):
    listed = [(0, "GPU-8932f937-d72c-4106-c12f-20bd9faed9f6"), (1, "GPU-425d1a57-5d7d-2dba-6409-9ac8f02cdd13")]

    def test_cuda_visible_devices(self):
        cases = [(None, [0, 1], []),
                 ("1,0", [1, 0], []),
                 ("GPU-425d1a57", [1], []),
                 ("GPU-425d1a57-5d7d-2dba-6409-9ac8f02cdd13,0", [1, 0], []),
                 ("1,1", [1], []),
                 ("0,-1,1", [0], []),  # CUDA ignores what follows an invalid entry
                 ("", None, []),
                 ("3", None, ["cvd-3"]),
                 ("GPU-", None, ["cvd-GPU-"]),  # matches both
                 ("GPU-ffff", None, ["cvd-GPU-ffff"]),
                 ("MIG-1f2e3d4c", None, ["cvd-mig"])]
        for cvd, want, warned in cases:
            got = []
            self.assertEqual(lem.workload_gpus(cvd, self.listed, lambda key, *a: got.append(key)), want, cvd)
            self.assertEqual(got, warned, cvd)
        # Without the exporter's list (its /metrics unreadable), indices are taken as they are.
        self.assertEqual(lem.workload_gpus("2,3", [], lambda *a: None), [2, 3])
        self.assertEqual(lem.workload_gpus(None, [], lambda *a: None), None)

    def test_exporter_gpus(self):
        text = ('# TYPE lem_gpu_info gauge\n'
                'lem_gpu_info{driver_version="580.159.04",gpu="1",name="NVIDIA H200",uuid="GPU-b"} 1\n'
                'lem_gpu_info{driver_version="580.159.04",gpu="0",name="NVIDIA H200",uuid="GPU-a"} 1\n'
                'lem_gpu_up{gpu="0",uuid="GPU-a"} 1\n')
        self.assertEqual(lem.exporter_gpus(text), [(0, "GPU-a"), (1, "GPU-b")])


if __name__ == "__main__":
    unittest.main()
