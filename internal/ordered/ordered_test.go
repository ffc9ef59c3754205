package ordered_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/internal/ordered"
)

// Results come in index order however long each takes, never more than `ahead` of them waiting, and every
// goroutine is gone when Run returns (synctest fails a bubble whose goroutines outlive it).
func TestRunInOrderBounded(t *testing.T) {
	for _, c := range []struct{ n, workers, ahead int }{{0, 4, 5}, {1, 4, 5}, {50, 4, 5}, {50, 1, 1}, {7, 16, 2}} {
		synctest.Test(t, func(t *testing.T) {
			var mu sync.Mutex
			done, maxWaiting := 0, 0
			consumed := 0
			work := func(_ context.Context, i int) int {
				time.Sleep(time.Duration((i*7)%5) * time.Millisecond) // later indices may finish first
				mu.Lock()
				done++
				maxWaiting = max(maxWaiting, done-consumed)
				mu.Unlock()
				return i * i
			}
			var got []int
			err := ordered.Run(context.Background(), c.n, c.workers, c.ahead, work, func(i, v int) error {
				assert.Equal(t, i*i, v)
				got = append(got, i)
				time.Sleep(3 * time.Millisecond) // a slow consumer
				mu.Lock()
				consumed++
				mu.Unlock()
				return nil
			})
			require.NoError(t, err)
			require.Len(t, got, c.n)
			for i, v := range got {
				assert.Equal(t, i, v)
			}
			assert.LessOrEqual(t, maxWaiting, c.ahead, "n %d workers %d", c.n, c.workers)
		})
	}
}

// The consumer's error stops the work (the context work gets is cancelled) and is returned; so is the caller's
// cancellation.
func TestRunStops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		boom := errors.New("boom")
		started := 0
		var mu sync.Mutex
		work := func(ctx context.Context, i int) int {
			mu.Lock()
			started++
			mu.Unlock()
			select {
			case <-ctx.Done():
			case <-time.After(time.Millisecond):
			}
			return i
		}
		err := ordered.Run(context.Background(), 1000, 4, 4, work, func(i, _ int) error {
			if i == 10 {
				return boom
			}
			return nil
		})
		assert.ErrorIs(t, err, boom)
		assert.Less(t, started, 20, "no more than the window ahead of the failing index was started")

		ctx, cancel := context.WithCancel(context.Background())
		err = ordered.Run(ctx, 1000, 4, 4, work, func(i, _ int) error {
			if i == 5 {
				cancel()
			}
			return nil
		})
		assert.ErrorIs(t, err, context.Canceled)
	})
}
