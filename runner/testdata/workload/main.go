// Command workload is the test workload for lem-run: it prints phase and result markers (or posts them to
// LEM_MARKER_URL), writes a file into LEM_RESULTS_DIR and exits with the code asked for. Built static, it runs
// in a FROM-scratch image.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func post(path, body string) error {
	req, err := http.NewRequest(http.MethodPost, os.Getenv("LEM_MARKER_URL")+path, bytes.NewBufferString(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+os.Getenv("LEM_MARKER_TOKEN"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return nil
}

func main() {
	phases := flag.String("phases", "prefill:1s,decode:2s", "name:duration,…")
	tokens := flag.Int("tokens", 128, "output tokens to report")
	httpResult := flag.Bool("http-result", false, "also post requests=1 to LEM_MARKER_URL")
	exit := flag.Int("exit", 0, "exit code")
	concurrent := flag.Int("concurrent-results", 0, "post this many results from each of 4 goroutines at once (key k0..k3, value 1 each)")
	stderrLine := flag.Int("stderr-line", 0, "write a line of this many bytes, without a newline, to stderr (a progress bar)")
	stdoutLine := flag.Int("stdout-line", 0, "first write a line of this many bytes (0123456789abcdef repeated) to stdout")
	serve := flag.String("serve", "", "act as a persistent backend server: after -load, answer /health on this address until SIGTERM")
	load := flag.Duration("load", time.Second, "model-load time before /health answers (with -serve)")
	describe := flag.Bool("describe", false, "first print PYTHONUNBUFFERED and whether stdout is a terminal")
	flag.Parse()
	signal.Ignore(syscall.SIGHUP)
	if *serve != "" {
		fmt.Println("server loading model")
		time.Sleep(*load)
		fmt.Println("server ready")
		http.HandleFunc("/health", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
		go http.ListenAndServe(*serve, nil)
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
		<-sig
		return
	}
	if *describe {
		st, err := os.Stdout.Stat()
		fmt.Printf("PYTHONUNBUFFERED=%q tty=%v\n", os.Getenv("PYTHONUNBUFFERED"), err == nil && st.Mode()&os.ModeCharDevice != 0)
	}
	if *stdoutLine > 0 {
		line := bytes.Repeat([]byte("0123456789abcdef"), *stdoutLine/16+1)[:*stdoutLine]
		os.Stdout.Write(append(line, '\n'))
	}
	fmt.Println("workload starting; gpus:", os.Getenv("CUDA_VISIBLE_DEVICES"), "run:", os.Getenv("LEM_RUN_ID"))
	if h := os.Getenv("LEM_BACKEND_HOST"); h != "" {
		fmt.Println("backend host:", h)
	}
	fmt.Fprintln(os.Stderr, "a line on stderr")
	fmt.Println("LEM_PHASE bad name with spaces")
	for _, p := range strings.Split(*phases, ",") {
		name, d, _ := strings.Cut(p, ":")
		dur, err := time.ParseDuration(d)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bad phase:", p)
			os.Exit(2)
		}
		fmt.Println("LEM_PHASE " + name)
		time.Sleep(dur)
	}
	if *stderrLine > 0 {
		bar := bytes.Repeat([]byte("#"), *stderrLine)
		bar[len(bar)-1] = '\r'
		os.Stderr.Write(bar)
	}
	if *concurrent > 0 {
		var wg sync.WaitGroup
		var failed atomic.Int64
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range *concurrent {
					if err := post("/result", fmt.Sprintf(`{"k%d": 1}`, g)); err != nil {
						failed.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		if failed.Load() > 0 {
			fmt.Fprintln(os.Stderr, failed.Load(), "concurrent result posts failed")
			os.Exit(5)
		}
	}
	fmt.Printf("LEM_RESULT output_tokens=%d\n", *tokens)
	if *httpResult {
		if err := post("/result", `{"requests": 1}`); err != nil {
			fmt.Fprintln(os.Stderr, "marker post failed:", err)
			os.Exit(4)
		}
	}
	if dir := os.Getenv("LEM_RESULTS_DIR"); dir != "" {
		os.WriteFile(filepath.Join(dir, "out.json"), []byte(`{"ok":true}`), 0o644)
	}
	os.Exit(*exit)
}
