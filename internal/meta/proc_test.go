package meta

import (
	"os"
	"os/exec"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestProcessIdentity(t *testing.T) {
	self := Self()
	assert.Equal(t, os.Getpid(), self.PID)
	assert.NotZero(t, self.Start)
	assert.False(t, self.Gone())
	back, err := ParseProcess(self.String())
	require.NoError(t, err)
	assert.Equal(t, self, back)

	cmd := exec.Command("true")
	require.NoError(t, cmd.Run())
	dead := Process{Host: self.Host, PID: cmd.Process.Pid, Start: self.Start}
	assert.True(t, dead.Gone(), "an exited child")
	reused := self
	reused.Start++
	assert.True(t, reused.Gone(), "the same PID with another start time is another process")
	other := Process{Host: "elsewhere", PID: 1, Start: 1}
	assert.False(t, other.Gone(), "another host's process is never said to be gone")
	_, err = ParseProcess("nohost")
	assert.Error(t, err)
}
