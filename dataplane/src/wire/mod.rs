//! MoldUDP64 framing (sans-IO).
