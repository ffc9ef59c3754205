package gpu_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/testutil"
)

// The replay clock runs Speed times the host's: its time, timers and tickers, checked on the virtual clock.
func TestScaledClock(t *testing.T) {
	testutil.VirtualTime(t, func(t *testing.T) {
		origin := time.Unix(1795735590, 0)
		c := &gpu.ScaledClock{Origin: origin, Start: time.Now(), Speed: 4}
		begin := time.Now()
		assert.Equal(t, origin, c.Now())

		time.Sleep(250 * time.Millisecond)
		assert.Equal(t, origin.Add(time.Second), c.Now(), "4 s of replay per host second")
		assert.Equal(t, time.Second, c.Since(origin))

		<-c.After(2 * time.Second)
		assert.Equal(t, 750*time.Millisecond, time.Since(begin), "2 s of replay time take 500 ms")

		tk := c.NewTicker(time.Second)
		defer tk.Stop()
		var ticks []time.Duration
		for range 3 {
			<-tk.C()
			ticks = append(ticks, c.Since(origin))
		}
		assert.Equal(t, []time.Duration{4 * time.Second, 5 * time.Second, 6 * time.Second}, ticks)
	})
}
