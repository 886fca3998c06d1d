// Greets, then copies stdin to stdout.
package main

import (
	"fmt"
	"io"
	"os"
)

func main() {
	fmt.Println("hello from go")
	if _, err := io.Copy(os.Stdout, os.Stdin); err != nil {
		os.Exit(1)
	}
}
