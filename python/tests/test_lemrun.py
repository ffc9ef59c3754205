"""The client under lem-run (process mode, a replayed H200 recording, a 1 s baseline): the same workload as on its own
posts into lem-run's run; the windows' energies it reports are those of the run's manifest and of lem-analyze's
report of the run directory; with LEM_MARKERS=stdout the same calls become marker lines that lem-run reads; a
workload killed with a window open leaves it ended by the run."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import support


def lem_run(out, run_id, workload, args=(), env_flags=(), extra=()):
    # 250 ms counter reads: enough counter intervals for the lag fit in a few seconds, so the answers given while
    # the run goes on and the manifest's whole-run accounting fit the same lag (with 1 s reads a run this short
    # has too few intervals while it runs: see the package's README).
    cmd = [support.binary("lem-run"), "--replay", support.TRACE, "--replay-from", "34s", "--baseline", "1s",
           "--counter-interval", "250ms", "--baseline-cache", os.path.join(out, run_id + "-baselines.json"),
           "--experiment", "py-" + run_id, "--run-id", run_id, "--out", out]
    for e in env_flags:
        cmd += ["-e", e]
    cmd += list(extra) + ["--", sys.executable, os.path.join(support.WORKLOADS, workload)] + list(args)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=support.clean_env())


class LemRunTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        support.binary("lem-analyze")
        cls.out = tempfile.mkdtemp(prefix="lem-py-runs-")
        client = os.path.join(cls.out, "client.json")
        stdout = os.path.join(cls.out, "stdout.json")
        # Four runs at once: each lem-run replays the recording on its own clock.
        procs = {"client": lem_run(cls.out, "client", "windows.py", [client]),
                 "stdout": lem_run(cls.out, "stdout", "windows.py", [stdout], ["LEM_MARKERS=stdout"]),
                 "killed": lem_run(cls.out, "killed", "killed.py"),
                 "quick": lem_run(cls.out, "quick", "quick.py")}
        cls.results = {}
        for name, p in procs.items():
            o, e = p.communicate(timeout=120)
            cls.results[name] = (p.returncode, o, e)
        for name in ("client", "stdout", "quick"):
            rc, _, err = cls.results[name]
            assert rc == 0, "lem-run %s: exit %d: %s" % (name, rc, err)
        with open(client) as f:
            cls.client = json.load(f)
        with open(stdout) as f:
            cls.stdout = json.load(f)
        cls.manifests = {}
        for name in procs:
            with open(os.path.join(cls.out, name, "manifest.json")) as f:
                cls.manifests[name] = json.load(f)
        cls.analyzed = support.analyze([os.path.join(cls.out, "client")])["client"]

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.out, ignore_errors=True)

    def windows(self, name):
        return [w for w in self.client["windows"] if w["name"] == name]

    def test_window_energies_are_the_manifests(self):
        """Per name: the client's energies (summed, median, p90 computed here) are the manifest's and lem-analyze's
        from the run directory, within 0.1 %."""
        for source, m in (("manifest", self.manifests["client"]), ("lem-analyze", self.analyzed)):
            mw = support.windows_by_name(m)
            for name, count in (("step", 3), ("batch", 1), ("req", 2)):
                es = [w["energy_j"] for w in self.windows(name)]
                msg = "%s: %s" % (source, name)
                self.assertEqual((len(es), mw[name]["count"]), (count, count), msg)
                self.assertAlmostEqual(sum(es), mw[name]["energy"]["hybrid_j"], delta=1e-3 * sum(es), msg=msg)
                med, p90 = support.median(es), support.quantile(es, 0.9)
                self.assertAlmostEqual(med, mw[name]["median_j"], delta=1e-3 * med, msg=msg)
                self.assertAlmostEqual(p90, mw[name]["p90_j"], delta=1e-3 * p90, msg=msg)
                # Adjusted is raw minus the baseline's power over the same duration: the raw energy's tolerance.
                adj = sum(w["adjusted_j"] for w in self.windows(name))
                self.assertAlmostEqual(adj, mw[name]["energy"]["adjusted_j"], delta=1e-3 * sum(es), msg=msg)

    def test_adjusted_is_raw_minus_the_runs_baseline(self):
        """lem-run measured the idle baseline; each window's adjusted energy is its raw energy minus the baseline's
        median power over the window's duration (clamped at 0), computed here from the manifest's baseline."""
        idle_w = self.manifests["client"]["gpus"][0]["baseline"]["median_w"]
        self.assertGreater(idle_w, 50)
        for w in self.client["windows"]:
            self.assertTrue(w["final"], w)
            want = max(0.0, w["energy_j"] - idle_w * w["duration_s"])
            self.assertAlmostEqual(w["adjusted_j"], want, delta=1e-6 * w["energy_j"], msg=w["name"])
            self.assertEqual(w["per_gpu"]["0"]["uuid"], support.RECORDED_UUID)

    def test_markers_and_results(self):
        m = self.manifests["client"]
        self.assertEqual(m["status"], "ok")
        # Every call became one POST (2 phase markers, 28 windows begun and ended, 3 results), none refused.
        self.assertEqual(m["markers"], {"parsed": 0, "malformed": 0, "rejected": 0, "http": 61})
        self.assertEqual(m["results"], {"output_tokens": "63", "requests": "3", "ttft.p50": "0.25"})
        self.assertEqual(m["derived"]["output_tokens"], 63)
        self.assertEqual([(p["name"], p["count"]) for p in m["phases"]], [("warm", 1)])
        st = self.client["status"]
        self.assertEqual((st["mode"], st["run_id"], st["posted"], st["failed"], st["rejected"]),
                         ("run", "client", 61, 0, 0))
        self.assertEqual(support.lem_lines(self.results["client"][2]), [])

    def test_stdout_markers(self):
        """LEM_MARKERS=stdout: the same calls as marker lines stamped with the workload's clock, read by lem-run."""
        m = self.manifests["stdout"]
        self.assertEqual(m["status"], "ok")
        self.assertEqual(m["markers"], {"parsed": 61, "stamped": 61, "malformed": 0, "rejected": 0, "http": 0})
        # Each edge is where the workload made it (its at=), not where lem-run read the line: the windows' durations
        # are the client's own, to the float rounding of summing them (read times would move each edge 0.05-1 ms).
        mw = support.windows_by_name(m)
        for name in ("step", "batch", "req"):
            ws = [w for w in self.stdout["windows"] if w["name"] == name]
            own = sum(w["end_ns"] - w["start_ns"] for w in ws) / 1e9
            self.assertEqual(len(ws), mw[name]["count"], name)
            self.assertAlmostEqual(mw[name]["duration_s"], own, delta=1e-6, msg=name)
        self.assertEqual([(p["name"], p["count"]) for p in m["phases"]], [("warm", 1)])
        got = {w["name"]: (w["count"], w.get("values")) for w in m["windows"]}
        self.assertEqual(got, {"step": (3, {"output_tokens": "51"}), "batch": (1, None),
                               "req": (2, {"output_tokens": "12", "finish": "stop"}),
                               "thread": (20, {"output_tokens": "20"}), "decorated": (2, None)})
        self.assertEqual(m["results"], self.manifests["client"]["results"])
        self.assertEqual(self.stdout["status"]["mode"], "stdout")
        self.assertTrue(all(w["energy_j"] is None for w in self.stdout["windows"]))

    def test_exit_right_after_marking(self):
        """What a workload marks just before it exits still reaches the run (sent at the interpreter's exit)."""
        m = self.manifests["quick"]
        self.assertEqual(m["markers"]["http"], 4)
        self.assertEqual(m["results"], {"output_tokens": "5"})
        self.assertEqual([(w["name"], w["count"]) for w in m["windows"]], [("w", 1)])
        self.assertEqual([p["name"] for p in m["phases"]], ["p"])

    def test_killed_workload(self):
        rc, _, err = self.results["killed"]
        self.assertNotEqual(rc, 0, err)
        m = self.manifests["killed"]
        self.assertEqual(m["status"], "failed")
        mw = support.windows_by_name(m)
        self.assertEqual((mw["doomed"]["count"], mw["doomed"].get("ended_by_run")), (1, 1))
        self.assertEqual((mw["done"]["count"], mw["done"].get("ended_by_run", 0)), (1, 0))


if __name__ == "__main__":
    unittest.main()
