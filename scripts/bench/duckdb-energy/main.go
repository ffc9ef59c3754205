// Command duckdb-energy is the DuckDB peer of `lem-analyze report TRACE -f csv` in the analyzer benchmark
// (scripts/bench-analyze.sh): the same table as scripts/bench/energy_table.py — per run marked in a lem trace and
// per GPU, the counter energy (the counter interpolated linearly at the run's edges) and the 50 Hz energy
// (trapezoid over the power samples, edges interpolated), and the 50 Hz energy per phase — computed in SQL by an
// embedded DuckDB over the same Parquet file(s), the way an analyst would write it: window functions for the
// running integral, ASOF joins for the edges. It lives in its own Go module so that lem never depends on DuckDB.
//
//	go run ./duckdb-energy TRACE.parquet [MORE.parquet ...] > table.csv
//
// Several files are one trace (a recording's segments).
package main

import (
	"database/sql"
	"encoding/csv"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	_ "github.com/duckdb/duckdb-go/v2"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "duckdb-energy:", err)
		os.Exit(1)
	}
}

func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func run(files []string) error {
	if len(files) == 0 {
		return fmt.Errorf("usage: duckdb-energy TRACE.parquet [MORE.parquet ...]")
	}
	db, err := sql.Open("duckdb", "")
	if err != nil {
		return err
	}
	defer db.Close()
	// DuckDB takes 80 % of the machine's memory by default and spills beyond; DUCKDB_MEMORY_LIMIT (e.g. 8GB)
	// bounds it on a shared machine, DUCKDB_TEMP_DIR says where it spills.
	for env, setting := range map[string]string{"DUCKDB_MEMORY_LIMIT": "memory_limit", "DUCKDB_TEMP_DIR": "temp_directory"} {
		if v := os.Getenv(env); v != "" {
			if _, err := db.Exec("SET " + setting + " = " + quote(v)); err != nil {
				return fmt.Errorf("%s=%s: %w", env, v, err)
			}
		}
	}
	var q []string
	for _, f := range files {
		q = append(q, quote(f))
	}
	src := "read_parquet([" + strings.Join(q, ", ") + "])"
	// Times as seconds from the trace's first row: Unix nanoseconds as doubles would lose the sub-microsecond part.
	var base int64
	if err := db.QueryRow("SELECT min(epoch_ns(time)) FROM " + src).Scan(&base); err != nil {
		return fmt.Errorf("reading %s: %w", strings.Join(files, ", "), err)
	}
	t := fmt.Sprintf("(epoch_ns(time) - %d) / 1e9", base)
	stmts := []string{
		// Power samples with the running trapezoid integral per GPU.
		`CREATE TEMP TABLE s AS
		 SELECT gpu, t, p, coalesce(sum((p + p0) / 2 * (t - t0)) OVER (PARTITION BY gpu ORDER BY t ROWS UNBOUNDED PRECEDING), 0) AS cum
		 FROM (SELECT gpu, t, p, lag(p) OVER w AS p0, lag(t) OVER w AS t0
		       FROM (SELECT gpu, ` + t + ` AS t, power_w AS p FROM ` + src + ` WHERE kind = 'sample')
		       WINDOW w AS (PARTITION BY gpu ORDER BY t))`,
		`CREATE TEMP TABLE c AS SELECT gpu, ` + t + ` AS t, energy_mj / 1000.0 AS e FROM ` + src + ` WHERE kind = 'counter'`,
		`CREATE TEMP TABLE ev AS SELECT ` + t + ` AS t, event, run_id, name FROM ` + src + ` WHERE kind = 'event'`,
		`CREATE TEMP TABLE runs AS
		 SELECT a.run_id, a.name AS experiment, a.t AS start, b.t AS "end"
		 FROM (SELECT * FROM ev WHERE event = 'run_start') a JOIN (SELECT * FROM ev WHERE event = 'run_end') b USING (run_id)`,
		// Phases: a phase event to the run's next phase or its end.
		`CREATE TEMP TABLE phases AS
		 SELECT run_id, name AS phase, t AS start, nt AS "end" FROM
		   (SELECT run_id, name, event, t, lead(t) OVER (PARTITION BY run_id ORDER BY t) AS nt
		    FROM ev WHERE event IN ('phase', 'run_end'))
		 WHERE event = 'phase' AND nt IS NOT NULL`,
		// Every edge the table needs, on every GPU.
		`CREATE TEMP TABLE edges AS
		 SELECT DISTINCT g.gpu, x FROM (SELECT DISTINCT gpu FROM s) g,
		   (SELECT start AS x FROM runs UNION SELECT "end" FROM runs UNION SELECT start FROM phases UNION SELECT "end" FROM phases)`,
		// The integral and the counter at each edge: the sample or reading at or before it and the one at or after.
		`CREATE TEMP TABLE edge_values AS
		 SELECT e.gpu, e.x,
		   a.cum + (a.p + CASE WHEN b.t > a.t THEN a.p + (b.p - a.p) * (e.x - a.t) / (b.t - a.t) ELSE a.p END) / 2 * (e.x - a.t) AS sj,
		   ca.e + CASE WHEN cb.t > ca.t THEN (cb.e - ca.e) * (e.x - ca.t) / (cb.t - ca.t) ELSE 0 END AS cj
		 FROM edges e
		 ASOF JOIN s a ON e.gpu = a.gpu AND e.x >= a.t
		 ASOF JOIN s b ON e.gpu = b.gpu AND e.x <= b.t
		 ASOF JOIN c ca ON e.gpu = ca.gpu AND e.x >= ca.t
		 ASOF JOIN c cb ON e.gpu = cb.gpu AND e.x <= cb.t`,
	}
	for _, st := range stmts {
		if _, err := db.Exec(st); err != nil {
			return fmt.Errorf("%w in\n%s", err, st)
		}
	}
	type key struct {
		run string
		gpu int
	}
	type row struct {
		experiment            string
		dur, counter, sampled float64
		phases                map[string]float64
	}
	out := map[key]*row{}
	rs, err := db.Query(`SELECT r.run_id, r.experiment, g.gpu, r."end" - r.start, b.cj - a.cj, b.sj - a.sj
		FROM runs r CROSS JOIN (SELECT DISTINCT gpu FROM s) g
		JOIN edge_values a ON a.gpu = g.gpu AND a.x = r.start JOIN edge_values b ON b.gpu = g.gpu AND b.x = r."end"`)
	if err != nil {
		return err
	}
	for rs.Next() {
		var k key
		r := &row{phases: map[string]float64{}}
		if err := rs.Scan(&k.run, &r.experiment, &k.gpu, &r.dur, &r.counter, &r.sampled); err != nil {
			return err
		}
		out[k] = r
	}
	if err := rs.Err(); err != nil {
		return err
	}
	names := map[string]bool{}
	ps, err := db.Query(`SELECT p.run_id, p.phase, g.gpu, sum(b.sj - a.sj)
		FROM phases p CROSS JOIN (SELECT DISTINCT gpu FROM s) g
		JOIN edge_values a ON a.gpu = g.gpu AND a.x = p.start JOIN edge_values b ON b.gpu = g.gpu AND b.x = p."end"
		GROUP BY ALL`)
	if err != nil {
		return err
	}
	for ps.Next() {
		var k key
		var name string
		var j float64
		if err := ps.Scan(&k.run, &name, &k.gpu, &j); err != nil {
			return err
		}
		if r := out[k]; r != nil {
			r.phases[name] = j
			names[name] = true
		}
	}
	if err := ps.Err(); err != nil {
		return err
	}
	keys := make([]key, 0, len(out))
	for k := range out {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].run != keys[j].run {
			return keys[i].run < keys[j].run
		}
		return keys[i].gpu < keys[j].gpu
	})
	var phaseNames []string
	for n := range names {
		phaseNames = append(phaseNames, n)
	}
	sort.Strings(phaseNames)
	w := csv.NewWriter(os.Stdout)
	head := []string{"run_id", "experiment", "gpu", "duration_s", "counter_j", "sampled_j"}
	for _, n := range phaseNames {
		head = append(head, "phase_j_"+n)
	}
	w.Write(head)
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', 3, 64) }
	for _, k := range keys {
		r := out[k]
		rec := []string{k.run, r.experiment, strconv.Itoa(k.gpu), f(r.dur), f(r.counter), f(r.sampled)}
		for _, n := range phaseNames {
			if v, ok := r.phases[n]; ok {
				rec = append(rec, f(v))
			} else {
				rec = append(rec, "")
			}
		}
		w.Write(rec)
	}
	w.Flush()
	return w.Error()
}
