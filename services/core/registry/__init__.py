"""The registry database: its tables (`models`), the queries services make (`queries`), its
change notices (`notices`, PostgreSQL LISTEN) and enrolment tokens as registrations spend them
(`tokens`). May import the core's foundation modules, nothing else of core."""
