// The probe contract (see ../README.md) in Go.
package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

func main() {
	input, _ := io.ReadAll(os.Stdin)
	fmt.Printf("hello from go\nargs: %s\nenv: %s\nstdin: ", strings.Join(os.Args[1:], " "), os.Getenv("GREETING"))
	os.Stdout.Write(input)
	fmt.Fprintln(os.Stderr, "probe done")
	code, _ := strconv.Atoi(os.Getenv("EXIT_CODE"))
	os.Exit(code)
}
