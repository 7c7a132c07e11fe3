module github.com/meadowrun-go/meadowrun

go 1.26
