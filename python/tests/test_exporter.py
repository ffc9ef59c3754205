"""The client on its own against a real lem-exporter replaying a real H200 recording (from the step from idle to
batch-1 inference): the windows' energies it reports are those lem-analyze computes from the exporter's recording
for the same instants; its run ends with the process, or expires with a killed one, its windows flagged."""

import json
import os
import signal
import subprocess
import sys
import time
import unittest

import support


class ExporterTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.exp = support.Exporter(replay_from="34s")
        try:
            cls._scenario()
        finally:
            cls.exp.stop()
        cls.manifests = support.analyze([cls.exp.record_dir])

    @classmethod
    def _scenario(cls):
        out = os.path.join(cls.exp.dir, "client.json")
        # A UUID prefix in CUDA_VISIBLE_DEVICES, as CUDA accepts it: mapped to the exporter's GPU 0.
        env = support.clean_env(LEM_EXPORTER=cls.exp.url, CUDA_VISIBLE_DEVICES="GPU-h200-rec",
                                LEM_EXPERIMENT="py-windows")
        p = support.run_py("windows.py", [out], env=env)
        assert p.returncode == 0, p.stderr
        cls.stderr = p.stderr
        with open(out) as f:
            cls.client = json.load(f)
        cls.run_info = cls.exp.get("/api/v1/runs/" + cls.client["run_id"])

        # Child processes, forked and spawned, mark into the parent's run.
        p = support.run_py("children.py", env=support.clean_env(LEM_EXPORTER=cls.exp.url, LEM_EXPERIMENT="py-children"))
        assert p.returncode == 0, p.stderr
        cls.children_id = p.stdout.split()[1]
        cls.children_stderr = p.stderr

        # A client killed with a window open; its lease (1 s) runs out and the exporter ends its run.
        env = support.clean_env(LEM_EXPORTER=cls.exp.url, LEM_EXPERIMENT="py-killed")
        p = support.run_py("killed.py", ["1"], env=env)
        assert p.returncode == -signal.SIGKILL, (p.returncode, p.stderr)
        cls.killed_id = p.stdout.split()[1]
        deadline = time.monotonic() + 15
        while True:  # the store ends expired runs when it is next asked about them
            run = cls.exp.get("/api/v1/runs/" + cls.killed_id)
            if run.get("status") or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        cls.killed_run = run

    def windows(self, name):
        return [w for w in self.client["windows"] if w["name"] == name]

    def manifest(self):
        return self.manifests[self.client["run_id"]]

    def test_window_energies_are_lem_analyzes(self):
        """Per name: the client's energies summed, their median and p90 (computed here) are the manifest's,
        accounted by lem-analyze from the exporter's recording, within 0.1 %."""
        mw = support.windows_by_name(self.manifest())
        for name, count in (("step", 3), ("batch", 1), ("req", 2)):
            es = [w["energy_j"] for w in self.windows(name)]
            self.assertEqual(len(es), count, name)
            m = mw[name]
            self.assertEqual(m["count"], count, name)
            self.assertAlmostEqual(sum(es), m["energy"]["hybrid_j"], delta=1e-3 * m["energy"]["hybrid_j"], msg=name)
            self.assertAlmostEqual(support.median(es), m["median_j"], delta=1e-3 * m["median_j"], msg=name)
            self.assertAlmostEqual(support.quantile(es, 0.9), m["p90_j"], delta=1e-3 * m["p90_j"], msg=name)
            durations = sum(w["duration_s"] for w in self.windows(name))
            self.assertAlmostEqual(durations, m["duration_s"], delta=1e-6, msg=name)

    def test_answers(self):
        for w in self.client["windows"]:
            self.assertTrue(w["final"], w)
            mean_w = w["energy_j"] / w["duration_s"]
            # The recording's H200: ~120 W idle with a CUDA context held, 700 W power limit.
            self.assertTrue(100 < mean_w < 700, (w["name"], mean_w))
            self.assertIsNone(w["adjusted_j"], "a plain lem-exporter run has no baseline")
            self.assertEqual(list(w["per_gpu"]), ["0"])
            g = w["per_gpu"]["0"]
            self.assertEqual(g["uuid"], support.RECORDED_UUID)
            self.assertEqual(g["method"], "hybrid")
            self.assertEqual(g["energy_j"], w["energy_j"])
            self.assertAlmostEqual(w["sampled_j"], w["energy_j"], delta=0.05 * w["energy_j"])
        batch = self.windows("batch")[0]
        so_far = self.client["batch_open"]
        self.assertTrue(so_far["open"])
        self.assertLess(so_far["energy_j"], batch["energy_j"])
        self.assertGreater(so_far["energy_j"], 0.9 * sum(w["energy_j"] for w in self.windows("step")))

    def test_nested_and_overlapping(self):
        steps, batch = self.windows("step"), self.windows("batch")[0]
        self.assertLessEqual(batch["start_ns"], steps[0]["start_ns"])
        self.assertGreaterEqual(batch["end_ns"], steps[-1]["end_ns"])
        self.assertGreaterEqual(batch["energy_j"], sum(w["energy_j"] for w in steps))
        a, b = self.windows("req")
        self.assertLess(b["start_ns"], a["end_ns"], "the two requests overlap")
        self.assertEqual((a["id"], b["id"]), ("a", "b"))
        # Back-to-back steps add up to the interval they span (the gaps between them are microseconds).
        span = self.client["span"]
        self.assertAlmostEqual(span["energy_j"], sum(w["energy_j"] for w in steps), delta=1e-3 * span["energy_j"])

    def test_counts_threads_results(self):
        mw = support.windows_by_name(self.manifest())
        self.assertEqual(mw["step"]["values"], {"output_tokens": "51"})
        self.assertEqual(mw["req"]["values"], {"output_tokens": "12", "finish": "stop"})
        self.assertEqual((mw["thread"]["count"], mw["thread"]["values"]), (20, {"output_tokens": "20"}))
        self.assertEqual(mw["decorated"]["count"], 2)
        m = self.manifest()
        self.assertEqual(m["status"], "ok")
        self.assertEqual(m["experiment"], "py-windows")
        self.assertEqual(m["results"], {"output_tokens": "63", "requests": "3", "ttft.p50": "0.25"})
        self.assertEqual([(p["name"], p["count"]) for p in m["phases"]], [("warm", 1)])
        st = self.client["status"]
        # 2 phase markers, 28 windows begun and ended, 3 results; none lost.
        self.assertEqual((st["posted"], st["failed"], st["rejected"], st["dropped"]), (61, 0, 0, 0))
        self.assertEqual(st["mode"], "exporter")
        self.assertEqual(support.lem_lines(self.stderr), [])

    def test_gpus_from_cuda_visible_devices(self):
        self.assertEqual(self.run_info["labels"], {"workload_gpus": "0"})
        self.assertEqual(self.client["status"]["gpus"], [0])

    def test_children_mark_into_the_run(self):
        m = self.manifests[self.children_id]
        self.assertEqual(m["status"], "ok")
        self.assertEqual({w["name"]: w["count"] for w in m["windows"]}, {"parent": 1, "forked": 1, "spawned": 1})
        self.assertEqual(m["results"], {"requests": "3"})
        self.assertEqual(support.lem_lines(self.children_stderr), [])

    def test_killed_client(self):
        self.assertEqual(self.killed_run["status"], "expired")
        m = self.manifests[self.killed_id]
        self.assertEqual(m["status"], "expired")
        mw = support.windows_by_name(m)
        self.assertEqual((mw["doomed"]["count"], mw["doomed"].get("ended_by_run")), (1, 1))
        self.assertEqual((mw["done"]["count"], mw["done"].get("ended_by_run", 0)), (1, 0))
        # The open window ended with the run, a lease (1 s) or more after the client's last word.
        self.assertGreater(mw["doomed"]["duration_s"], 1.0)


class NetworkFailureTest(unittest.TestCase):
    def test_server_dies_under_the_client(self):
        """The workload goes on with one warning; energies it asks for afterwards are None."""
        exp = support.Exporter(replay_from="34s", record=False)
        try:
            env = support.clean_env(LEM_EXPORTER=exp.url)
            p = subprocess.Popen([sys.executable, os.path.join(support.WORKLOADS, "netfail.py")], env=env,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                self.assertEqual(p.stdout.readline().strip(), "ready")
                exp.stop(signal.SIGKILL)
                out, err = p.communicate("go\n", timeout=60)
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        finally:
            exp.stop()
        self.assertEqual(p.returncode, 0, err)
        got = json.loads(out)
        self.assertGreater(got["before"], 0)
        self.assertIsNone(got["after"])
        self.assertGreater(got["duration"], 0.09)
        self.assertGreater(got["status"]["failed"], 0)
        lines = support.lem_lines(err)
        self.assertEqual(len(lines), 1, err)
        self.assertIn("cannot reach the marker server", lines[0])


if __name__ == "__main__":
    unittest.main()
