package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// healthcheckCmd asks a running exporter whether it is ready, for container HEALTHCHECKs in images that have no
// curl or wget. It exits 0 only on 200 from /readyz.
type healthcheckCmd struct {
	URL           string        `name:"url" env:"LEM_HEALTHCHECK_URL" help:"Readiness URL (default: /readyz on the first --web.listen-address, through loopback)."`
	ListenAddress []string      `name:"web.listen-address" default:":9636" help:"The exporter's listen addresses, as given to it (the serve command reads the same variable)."`
	Timeout       time.Duration `default:"2s" env:"LEM_HEALTHCHECK_TIMEOUT" help:"Give up after this long."`
}

func (c *healthcheckCmd) Run() error {
	u := c.URL
	if u == "" {
		var err error
		if u, err = readyURL(c.ListenAddress); err != nil {
			return err
		}
	} else if p, err := url.Parse(u); err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
		return fmt.Errorf("--url %q: want an http:// or https:// URL", u)
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("--url %q: %w", u, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("not healthy: %w", err)
	}
	defer resp.Body.Close()
	// The body names the problems (GPU lost, no samples yet): worth a line in `docker inspect`.
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("not healthy: GET %s: %s: %s", u, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// readyURL is the /readyz URL of the first listen address: a wildcard or empty host is reached through 127.0.0.1
// (a dual-stack [::] listener accepts it too, and containers often have no ::1), a named one as given.
func readyURL(listen []string) (string, error) {
	if len(listen) == 0 || listen[0] == "" {
		return "", errors.New("--web.listen-address: none given")
	}
	host, port, err := net.SplitHostPort(listen[0])
	if err != nil {
		return "", fmt.Errorf("--web.listen-address %q: %w", listen[0], err)
	}
	if port == "" {
		return "", fmt.Errorf("--web.listen-address %q: no port", listen[0])
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/readyz", nil
}
