package fileutil_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/internal/fileutil"
)

// Writers that each add their own entry to one shared file, at once: every entry is there at the end (a
// read-modify-write without the lock loses most of them).
func TestUpdateLosesNoWriter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "shared.json")
	const n = 32
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			err := fileutil.Update(path, func(old []byte) ([]byte, error) {
				m := map[string]int{}
				if old != nil {
					if err := json.Unmarshal(old, &m); err != nil {
						return nil, err
					}
				}
				m[fmt.Sprint(i)] = i
				return json.Marshal(m)
			})
			assert.NoError(t, err)
		})
	}
	wg.Wait()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	m := map[string]int{}
	require.NoError(t, json.Unmarshal(b, &m))
	assert.Len(t, m, n)

	// An update that fails leaves the file as it was.
	require.Error(t, fileutil.Update(path, func([]byte) ([]byte, error) { return nil, fmt.Errorf("no") }))
	after, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, b, after)
}
