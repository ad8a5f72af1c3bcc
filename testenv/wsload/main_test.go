package wsload

import (
	"os"
	"testing"

	"github.com/sockshim/sockshim/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Run(m)) }
