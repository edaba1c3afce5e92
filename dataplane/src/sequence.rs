//! Sequencing and gap detection (sans-IO).
