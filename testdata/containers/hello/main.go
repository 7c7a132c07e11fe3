// Command hello is the program of the FROM-scratch test image that
// scripts/containers.sh builds: static (CGO_ENABLED=0), it serves as a
// job's command and as a sidecar.
//
//	hello [WORDS...]               print "hello from scratch WORDS..."
//	hello -listen ADDR [WORDS...]  serve that line to every connection
//	hello -exit N [WORDS...]       print the line, then exit with code N
//	hello -sleep D [WORDS...]      print the line, then sleep D (a Go duration)
//	hello -env NAME                print the variable NAME
//	hello -dial ADDR               print the first line ADDR serves
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

func main() {
	listen := flag.String("listen", "", "serve the greeting on this address")
	exit := flag.Int("exit", 0, "exit with this code after the greeting")
	sleep := flag.Duration("sleep", 0, "sleep this long after the greeting")
	env := flag.String("env", "", "print this environment variable")
	dial := flag.String("dial", "", "print the first line this address serves")
	flag.Parse()
	switch {
	case *env != "":
		fmt.Println(os.Getenv(*env))
		return
	case *dial != "":
		c, err := net.Dial("tcp", *dial)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		line, _ := bufio.NewReader(c).ReadString('\n')
		fmt.Print(line)
		return
	}
	line := strings.TrimSpace("hello from scratch " + strings.Join(flag.Args(), " "))
	fmt.Println(line)
	if *listen != "" {
		l, err := net.Listen("tcp", *listen)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		for {
			c, err := l.Accept()
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			fmt.Fprintln(c, line)
			c.Close()
		}
	}
	time.Sleep(*sleep)
	os.Exit(*exit)
}
