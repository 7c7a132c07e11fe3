package agentproto

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// ErrUnknownOp is the error of a request line whose op this version does
// not know.
var ErrUnknownOp = errors.New("agentproto: unknown operation")

// AppendRequest appends r's line, with its "op" and the newline, to b.
func AppendRequest(b []byte, r Request) ([]byte, error) {
	body, err := json.Marshal(r)
	if err != nil {
		return b, fmt.Errorf("agentproto: encoding %s: %w", r.Op(), err)
	}
	op, _ := json.Marshal(r.Op())
	b = append(append(b, `{"op":`...), op...)
	if len(body) > 2 {
		// body is {"k":...}: its fields follow the op.
		b = append(append(b, ','), body[1:len(body)-1]...)
	}
	return append(b, '}', '\n'), nil
}

// WriteRequest writes r's line to w.
func WriteRequest(w io.Writer, r Request) error {
	b, err := AppendRequest(nil, r)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// ParseRequest decodes a request line. An op it does not know is
// ErrUnknownOp; the request then is nil.
func ParseRequest(line []byte) (Request, error) {
	var head struct {
		Op string `json:"op"`
	}
	if err := json.Unmarshal(line, &head); err != nil {
		return nil, fmt.Errorf("agentproto: bad request: %w", err)
	}
	var r Request
	switch head.Op {
	case OpHello:
		r = &Hello{}
	case OpFit:
		r = &Fit{}
	case OpHave:
		r = &Have{}
	case OpPut:
		r = &Put{}
	case OpStart:
		r = &Start{}
	case OpKill:
		r = &Kill{}
	case OpSupervise:
		r = &Supervise{}
	case OpJob:
		r = &JobQuery{}
	case OpCancel:
		r = &CancelJob{}
	case OpLog:
		r = &JobLog{}
	default:
		return nil, fmt.Errorf("%w %q", ErrUnknownOp, head.Op)
	}
	if err := json.Unmarshal(line, r); err != nil {
		return nil, fmt.Errorf("agentproto: bad %s request: %w", head.Op, err)
	}
	return r, nil
}

// ReadLine reads one line (a request, response or event) from br, without
// its newline.
func ReadLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadBytes('\n')
	if err != nil {
		if err == io.EOF && len(line) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return bytes.TrimSuffix(line, []byte("\n")), nil
}

// WriteMessage writes v (a response or an event) as one line to w.
func WriteMessage(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("agentproto: encoding %T: %w", v, err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// ReadMessage reads one line from br into v (a pointer to a response or
// an event).
func ReadMessage(br *bufio.Reader, v any) error {
	line, err := ReadLine(br)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(line, v); err != nil {
		return fmt.Errorf("bad agent response: %w", err)
	}
	return nil
}
