// The edge overview: the state badge, offline banner and connection state are kept current
// by edgepage.js; the rest of the page is what the bridge knew when it was rendered.

import "../edgepage.js";
