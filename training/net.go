package training

import (
	"fmt"
	"math"
	"math/rand/v2"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Params are the net's weights in gorgonia's layout: W1 is Inputs x Hidden, row-major
// (W1[j*Hidden+k] weighs input j into hidden unit k); W2 is Hidden x 1.
type Params struct {
	Hidden int
	W1     []float32 // [Inputs*Hidden]
	B1     []float32 // [Hidden]
	W2     []float32 // [Hidden]
	B2     float32
}

// InitParams draws initial weights from rng: He-uniform for the ReLU layer, Glorot-uniform
// for the output, zero biases.
func InitParams(hidden int, rng *rand.Rand) *Params {
	p := &Params{
		Hidden: hidden,
		W1:     make([]float32, Inputs*hidden),
		B1:     make([]float32, hidden),
		W2:     make([]float32, hidden),
	}
	a1 := math.Sqrt(6.0 / Inputs)
	for i := range p.W1 {
		p.W1[i] = float32((2*rng.Float64() - 1) * a1)
	}
	a2 := math.Sqrt(6.0 / float64(hidden+1))
	for i := range p.W2 {
		p.W2[i] = float32((2*rng.Float64() - 1) * a2)
	}
	return p
}

// Clone returns a deep copy.
func (p *Params) Clone() *Params {
	q := *p
	q.W1 = append([]float32(nil), p.W1...)
	q.B1 = append([]float32(nil), p.B1...)
	q.W2 = append([]float32(nil), p.W2...)
	return &q
}

// Logit is the net's output before the sigmoid for one standardised input row, accumulated
// in float64 as model.Forward does.
func (p *Params) Logit(x []float32, h []float64) float64 {
	H := p.Hidden
	h = h[:H]
	for k := range h {
		h[k] = float64(p.B1[k])
	}
	for j, xj := range x[:Inputs] {
		if xj == 0 {
			continue
		}
		row := p.W1[j*H : (j+1)*H]
		for k, w := range row {
			h[k] += float64(w) * float64(xj)
		}
	}
	z := float64(p.B2)
	for k, v := range h {
		if v > 0 {
			z += float64(p.W2[k]) * v
		}
	}
	return z
}

func sigmoid(z float64) float64 { return 1 / (1 + math.Exp(-z)) }

// graph is the gorgonia expression graph for one fixed batch size:
// prob = sigmoid(relu(x W1 + b1) W2 + b2), and, when built for training, the class-weighted
// binary cross-entropy loss = mean(wt * (softplus(z) - y z)) with its gradients.
type graph struct {
	g                  *G.ExprGraph
	x, y, wt           *G.Node
	w1, b1, w2, b2     *G.Node
	prob, loss         *G.Node
	xT, yT, wtT        *tensor.Dense
	vm                 G.VM
	batch, hidden      int
	learnables         G.Nodes
	xBuf, yBuf, wtBuf  []float32
	w1V, b1V, w2V, b2V []float32 // the parameters' backing arrays, updated in place by the solver
}

func newGraph(batch int, p *Params, train bool) (*graph, error) {
	H := p.Hidden
	gr := &graph{g: G.NewGraph(), batch: batch, hidden: H}
	g := gr.g
	gr.xBuf = make([]float32, batch*Inputs)
	gr.xT = tensor.New(tensor.WithShape(batch, Inputs), tensor.WithBacking(gr.xBuf))
	gr.x = G.NewMatrix(g, tensor.Float32, G.WithShape(batch, Inputs), G.WithName("x"), G.WithValue(gr.xT))

	param := func(name string, data []float32, shape ...int) (*G.Node, []float32) {
		buf := append([]float32(nil), data...)
		t := tensor.New(tensor.WithShape(shape...), tensor.WithBacking(buf))
		return G.NewMatrix(g, tensor.Float32, G.WithShape(shape...), G.WithName(name), G.WithValue(t)), buf
	}
	gr.w1, gr.w1V = param("w1", p.W1, Inputs, H)
	gr.b1, gr.b1V = param("b1", p.B1, 1, H)
	gr.w2, gr.w2V = param("w2", p.W2, H, 1)
	gr.b2, gr.b2V = param("b2", []float32{p.B2}, 1, 1)
	gr.learnables = G.Nodes{gr.w1, gr.b1, gr.w2, gr.b2}

	z, err := logitGraph(gr.x, gr.w1, gr.b1, gr.w2, gr.b2)
	if err != nil {
		return nil, err
	}
	if gr.prob, err = G.Sigmoid(z); err != nil {
		return nil, fmt.Errorf("build graph: sigmoid: %w", err)
	}
	if !train {
		gr.vm = G.NewTapeMachine(g)
		return gr, nil
	}

	gr.yBuf = make([]float32, batch)
	gr.wtBuf = make([]float32, batch)
	gr.yT = tensor.New(tensor.WithShape(batch, 1), tensor.WithBacking(gr.yBuf))
	gr.wtT = tensor.New(tensor.WithShape(batch, 1), tensor.WithBacking(gr.wtBuf))
	gr.y = G.NewMatrix(g, tensor.Float32, G.WithShape(batch, 1), G.WithName("y"), G.WithValue(gr.yT))
	gr.wt = G.NewMatrix(g, tensor.Float32, G.WithShape(batch, 1), G.WithName("wt"), G.WithValue(gr.wtT))
	// BCE from the logit, stable for any z: softplus(z) - y*z = -[y log p + (1-y) log(1-p)].
	sp, err := G.Softplus(z)
	if err != nil {
		return nil, fmt.Errorf("build graph: softplus: %w", err)
	}
	yz, err := G.HadamardProd(gr.y, z)
	if err != nil {
		return nil, fmt.Errorf("build graph: y*z: %w", err)
	}
	bce, err := G.Sub(sp, yz)
	if err != nil {
		return nil, fmt.Errorf("build graph: bce: %w", err)
	}
	wbce, err := G.HadamardProd(gr.wt, bce)
	if err != nil {
		return nil, fmt.Errorf("build graph: weights: %w", err)
	}
	if gr.loss, err = G.Mean(wbce); err != nil {
		return nil, fmt.Errorf("build graph: mean: %w", err)
	}
	if _, err = G.Grad(gr.loss, gr.learnables...); err != nil {
		return nil, fmt.Errorf("build graph: gradients: %w", err)
	}
	gr.vm = G.NewTapeMachine(g, G.BindDualValues(gr.learnables...))
	return gr, nil
}

// run executes the graph once on the current buffers.
func (gr *graph) run() error {
	defer gr.vm.Reset()
	for _, l := range []struct {
		n *G.Node
		v *tensor.Dense
	}{{gr.x, gr.xT}, {gr.y, gr.yT}, {gr.wt, gr.wtT}} {
		if l.n == nil {
			continue
		}
		if err := G.Let(l.n, l.v); err != nil {
			return fmt.Errorf("bind %s: %w", l.n.Name(), err)
		}
	}
	if err := gr.vm.RunAll(); err != nil {
		return fmt.Errorf("run graph: %w", err)
	}
	return nil
}

// lossValue is the loss of the last run.
func (gr *graph) lossValue() float64 {
	switch v := gr.loss.Value().Data().(type) {
	case float32:
		return float64(v)
	case []float32:
		return float64(v[0])
	}
	return math.NaN()
}

// params copies the graph's current weights out.
func (gr *graph) params() *Params {
	return (&Params{Hidden: gr.hidden, W1: gr.w1V, B1: gr.b1V, W2: gr.w2V, B2: gr.b2V[0]}).Clone()
}

// valueOf returns the float32 backing array of a learnable's current value. The solver
// updates values in place, but fetch them from the node to be safe should it replace them.
func valueOf(n *G.Node) []float32 { return n.Value().Data().([]float32) }

func (gr *graph) sync() {
	gr.w1V, gr.b1V, gr.w2V, gr.b2V = valueOf(gr.w1), valueOf(gr.b1), valueOf(gr.w2), valueOf(gr.b2)
}

// Probabilities runs gorgonia's forward pass on standardised rows x (n x Inputs, row-major) and
// returns P(yield) per row. It is slow (a graph per call) and exists to check model/'s
// inference against the trainer's.
func Probabilities(p *Params, x []float32) ([]float64, error) {
	n := len(x) / Inputs
	if n == 0 || len(x) != n*Inputs {
		return nil, fmt.Errorf("probabilities: %d values is not a positive multiple of %d", len(x), Inputs)
	}
	gr, err := newGraph(n, p, false)
	if err != nil {
		return nil, err
	}
	defer gr.vm.Close()
	copy(gr.xBuf, x)
	if err := gr.run(); err != nil {
		return nil, err
	}
	out := make([]float64, n)
	for i, v := range gr.prob.Value().Data().([]float32) {
		out[i] = float64(v)
	}
	return out, nil
}

// logitGraph is the net's logit in the graph: relu(x*w1 + b1)*w2 + b2 (the same for every
// input width).
func logitGraph(x, w1, b1, w2, b2 *G.Node) (*G.Node, error) {
	xw, err := G.Mul(x, w1)
	if err != nil {
		return nil, fmt.Errorf("build graph: x*w1: %w", err)
	}
	pre, err := G.BroadcastAdd(xw, b1, nil, []byte{0})
	if err != nil {
		return nil, fmt.Errorf("build graph: +b1: %w", err)
	}
	hid, err := G.Rectify(pre)
	if err != nil {
		return nil, fmt.Errorf("build graph: relu: %w", err)
	}
	hw, err := G.Mul(hid, w2)
	if err != nil {
		return nil, fmt.Errorf("build graph: h*w2: %w", err)
	}
	z, err := G.BroadcastAdd(hw, b2, nil, []byte{0})
	if err != nil {
		return nil, fmt.Errorf("build graph: +b2: %w", err)
	}
	return z, nil
}
