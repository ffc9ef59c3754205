package catalogue

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCommitted(t *testing.T) {
	c, ok := Committed("transformers")
	require.True(t, ok)
	assert.Equal(t, "5.17.0", c.Version)
	_, err := c.Lookup("max_new_tokens")
	assert.NoError(t, err)
	_, ok = Committed("no-such-backend")
	assert.False(t, ok)
	for _, v := range []struct {
		a, b string
		want bool
	}{{"5.17.0", "5.9.1", true}, {"5.9.1", "5.17.0", false}, {"1.0.1", "1.0", true}, {"0.8.5rc1", "0.8.4", true}, {"1.2", "1.2", false}} {
		assert.Equal(t, v.want, newer(v.a, v.b), "%s > %s", v.a, v.b)
	}
}
