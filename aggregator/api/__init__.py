"""The customer and admin API: stats, export, dashboard, accounts, audit, register."""
